"""Django for one feature store, outside `manage.py`: the environment its settings read, and the caption loader the
CLI runs after `vidsearch index --data`.

The site's secret key comes from DJANGO_SECRET_KEY, else from `site.secret` in the store, created once (0600). The
site database (users, password hashes, sessions) is created 0600 before SQLite first opens it, so its `-wal` and `-shm`
files are 0600 too (SQLite gives them the database's mode); at every start, a secret file that someone made readable
by others, or a store directory anyone may write to, is set back and reported.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

from vidsearch.fsutil import atomic_write_text

PROD_SETTINGS = "vidsearch.web.settings.prod"
SECRET_FILE = "site.secret"
PRIVATE = 0o600
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")

log = logging.getLogger(__name__)


class CaptionLoadError(Exception):
    """Loading the caption database failed; the message has the loader's error."""


def prepare_environment(store_dir: str | Path, *, https: bool | None = None) -> None:
    """Point the settings at the store (production settings unless DJANGO_SETTINGS_MODULE names others)."""
    store = Path(store_dir).resolve()
    os.environ["VIDSEARCH_STORE"] = str(store)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", PROD_SETTINGS)
    if not os.environ.get("DJANGO_SECRET_KEY"):
        os.environ["DJANGO_SECRET_KEY"] = secret_key(store)
    if https is not None:
        os.environ["VIDSEARCH_HTTPS"] = "1" if https else "0"


def secret_key(store: Path) -> str:
    """The store's site key, made on first use; two processes racing both end up with the first one written."""
    path = store / SECRET_FILE
    if not path.exists():
        store.mkdir(parents=True, exist_ok=True)
        candidate = store / f".{SECRET_FILE}.{secrets.token_hex(4)}"
        atomic_write_text(candidate, secrets.token_urlsafe(50), mode=0o600)
        try:
            os.link(candidate, path)  # fails if another process linked its key first
        except FileExistsError:
            pass
        finally:
            candidate.unlink()
    return path.read_text().strip()


def start_django() -> None:
    """django.setup() and bring the store's site database up to date."""
    import django
    from django.core.management import call_command

    django.setup()
    secure_site_files()
    call_command("migrate", interactive=False, verbosity=0)


def secure_site_files() -> None:
    """Create the site database 0600 if it is new; set secret files and the store directory back where someone
    loosened them, with a warning (sessions and password hashes may have been read)."""
    from django.conf import settings

    database = settings.DATABASES["default"]["NAME"]
    if database == ":memory:":
        return
    database = Path(database)
    if not database.exists():
        database.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE))  # SQLite starts from an empty file
    private = [database, *(Path(f"{database}{suffix}") for suffix in SQLITE_SIDE_FILES)]
    if settings.VIDSEARCH_STORE is not None and settings.VIDSEARCH_STORE.is_dir():
        private.append(settings.VIDSEARCH_STORE / SECRET_FILE)
        _refuse_world_writable(settings.VIDSEARCH_STORE)
    for path in private:
        _make_private(path)


def _make_private(path: Path) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if mode & 0o077:
        os.chmod(path, PRIVATE)
        log.warning("%s was mode %04o (others could read the site's sessions, password hashes or key): set to 0600",
                    path, mode)


def _refuse_world_writable(directory: Path) -> None:
    mode = stat.S_IMODE(directory.stat().st_mode)
    if mode & 0o002:
        os.chmod(directory, mode & ~0o002)
        log.warning("the store directory %s was writable by everyone (mode %04o): set to %04o", directory, mode,
                    mode & ~0o002)


def load_caption_database(*, store_dir: str | Path, manifest: str | Path) -> str:
    """Load the store's caption database from a manifest in a child process (Django stays out of the caller)."""
    command = [sys.executable, "-m", "vidsearch.web.manage", "--store", str(store_dir), "load_captions",
               str(Path(manifest).resolve())]
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": PROD_SETTINGS}
    done = subprocess.run(command, capture_output=True, text=True, env=environment)
    if done.returncode != 0:
        raise CaptionLoadError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed")
    return done.stdout.strip()
