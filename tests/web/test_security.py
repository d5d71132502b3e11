"""CSRF on every state-changing view, deployment checks under the production settings, migrations checked in."""

import os
import secrets
import sqlite3
import stat
import subprocess
import sys

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.urls import URLPattern, get_resolver, reverse

SAMPLE_ARGS = {"video_id": "some-video", "index": 0, "job_id": "00000000-0000-0000-0000-000000000000"}
# POST only to carry a multipart body; they change nothing (a search), so, like the GET API, need no CSRF token
READ_ONLY_POSTS = {"api-search-image", "api-search-clip"}


def every_route() -> list[str]:
    return [p.name for p in get_resolver().url_patterns if isinstance(p, URLPattern)]


@pytest.mark.parametrize("name", every_route())
def test_no_view_changes_state_without_the_csrf_token(db, library, name):
    client = Client(enforce_csrf_checks=True)
    client.force_login(User.objects.create_user("u", password="a long password"))
    pattern = next(p for p in get_resolver().url_patterns if p.name == name)
    url = reverse(name, kwargs={key: SAMPLE_ARGS[key] for key in pattern.pattern.converters})
    methods = (client.put, client.patch, client.delete) if name in READ_ONLY_POSTS else \
        (client.post, client.put, client.patch, client.delete)
    for method in methods:
        assert method(url).status_code in (403, 405), (name, method.__name__)


def test_state_changing_views_work_with_the_token(db, library):
    client = Client(enforce_csrf_checks=True)
    User.objects.create_user("u", password="a long password")
    page = client.get(reverse("login"))
    token = page.cookies["csrftoken"].value
    login = client.post(reverse("login"), {"username": "u", "password": "a long password",
                                           "csrfmiddlewaretoken": token})
    assert login.status_code == 302
    assert client.post(reverse("logout"), {"csrfmiddlewaretoken": client.cookies["csrftoken"].value}).status_code == 302


def test_security_headers(client, site):
    response = client.get("/")
    assert response["X-Content-Type-Options"] == "nosniff" and response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"


@pytest.mark.parametrize("path", ["/", "/api/health", "/accounts/login/", "/no-such-page"])
def test_every_answer_has_a_content_security_policy(client, site, path):
    policy = client.get(path)["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'self'" and directives["object-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'" and directives["base-uri"] == "'none'"
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy


def test_static_files_are_served(client, db):
    response = client.get("/static/library/site.css")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/css")


def test_migrations_are_checked_in(db):
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def run_django(args: list[str], **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "VIDSEARCH_"))}
    environment.update(DJANGO_SETTINGS_MODULE="vidsearch.web.settings.prod", **env)
    return subprocess.run([sys.executable, "-m", "django", *args], capture_output=True, text=True, env=environment)


def test_deploy_check_is_clean_under_production_settings(tmp_path):
    done = run_django(["check", "--deploy", "--fail-level", "WARNING"],
                      DJANGO_SECRET_KEY=secrets.token_urlsafe(50), VIDSEARCH_STORE=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "no issues" in done.stdout


def test_production_settings_need_a_secret_key(tmp_path):
    done = run_django(["check"], VIDSEARCH_STORE=str(tmp_path))
    assert done.returncode != 0 and "DJANGO_SECRET_KEY must be set" in done.stderr


def manage(store, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "VIDSEARCH_"))}
    environment.update(env)
    return subprocess.run([sys.executable, "-m", "vidsearch.web.manage", "--store", str(store), *args],
                          capture_output=True, text=True, env=environment)


def superusers(store) -> list[str]:
    with sqlite3.connect(store / "site.sqlite3") as database:
        return [name for (name,) in database.execute("SELECT username FROM auth_user WHERE is_superuser")]


def test_createsuperuser_works_on_a_fresh_store_and_enforces_the_password_validators(tmp_path):
    store = tmp_path / "store"  # never served: no site database yet
    weak = manage(store, "createsuperuser", "--noinput", "--username", "admin", "--email", "a@example.org",
                  DJANGO_SUPERUSER_PASSWORD="a")
    assert weak.returncode == 2, weak.stderr
    assert weak.stderr.strip().splitlines()[-1].startswith("CommandError: DJANGO_SUPERUSER_PASSWORD: This password is "
                                                            "too short."), weak.stderr
    assert superusers(store) == []
    strong = manage(store, "createsuperuser", "--noinput", "--username", "admin", "--email", "a@example.org",
                    DJANGO_SUPERUSER_PASSWORD="kite over the beach at dawn")
    assert strong.returncode == 0, strong.stderr
    assert superusers(store) == ["admin"]


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_site_database_and_its_wal_files_are_private_from_creation(tmp_path):
    store = tmp_path / "store"
    assert manage(store, "check").returncode == 0
    database = store / "site.sqlite3"
    with sqlite3.connect(database) as connection:  # an open connection in WAL mode: -wal and -shm exist
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE t (x)")
        modes = {path.name: mode(path) for path in store.glob("site.*")}
    assert modes == {"site.sqlite3": 0o600, "site.sqlite3-wal": 0o600, "site.sqlite3-shm": 0o600,
                     "site.secret": 0o600}


def test_loosened_secrets_and_a_world_writable_store_are_reported_and_set_back(tmp_path):
    store = tmp_path / "store"
    assert manage(store, "check").returncode == 0
    os.chmod(store / "site.sqlite3", 0o644)
    os.chmod(store / "site.secret", 0o640)
    os.chmod(store, 0o777)
    done = manage(store, "check")
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if " WARNING " in line]
    assert len(warnings) == 3, done.stderr
    assert "site.sqlite3 was mode 0644" in done.stderr and "site.secret was mode 0640" in done.stderr
    assert "was writable by everyone (mode 0777): set to 0775" in done.stderr
    assert (mode(store / "site.sqlite3"), mode(store / "site.secret"), mode(store)) == (0o600, 0o600, 0o775)
