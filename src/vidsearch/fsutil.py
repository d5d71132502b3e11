"""Durable file writes: temp file in the same directory, fsync, atomic rename, fsync the directory.

Every byte, fsync and rename of vidsearch's durable writes goes through `write_all`, `os.fsync` and `os.replace`
here, so tests can inject I/O errors at any of them.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

_MAX_WRITE = 1 << 30
TEMP_SUFFIX = ".tmp"

Buffer = bytes | bytearray | memoryview


PUBLIC = 0o644  # files others on the machine may read (caches, stores, checkpoints); secrets pass 0o600


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: Buffer) -> None:
    """Write all of `data` to `fd` (os.write may write less than asked)."""
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view[:_MAX_WRITE])
        view = view[written:]


def _temp_file(directory: Path, name: str, mode: int = PUBLIC) -> tuple[int, Path]:
    """mkstemp (which creates files 0600), then the mode the final file should have."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=TEMP_SUFFIX)
    os.fchmod(fd, mode)
    return fd, Path(tmp)


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = PUBLIC) -> None:
    """Replace `path` with `data` so that readers see either the old or the new file, never a mix."""
    path = Path(path)
    fd, tmp = _temp_file(path.parent, path.name, mode)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str, *, mode: int = PUBLIC) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def _sha256_of(parts: Sequence[Buffer]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def write_temp_hashed(directory: Path, name: str, parts: Sequence[Buffer]) -> tuple[Path, str]:
    """Write `parts` to a new fsynced temp file in `directory`; return its path and the sha256 of its content.

    The hash is computed in a second thread while the bytes are written (both release the GIL), so hashing costs
    little extra time. The caller renames the temp file into place; on error the temp file is removed.
    """
    fd, tmp = _temp_file(Path(directory), name)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            digest = pool.submit(_sha256_of, parts)
            try:
                for part in parts:
                    write_all(fd, part)
                os.fsync(fd)
            finally:
                os.close(fd)
            return tmp, digest.result()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_temp_files(directory: Path) -> list[Path]:
    """Delete the temp files an interrupted writer left in `directory` (only call while holding its write lock)."""
    leftovers = [p for p in Path(directory).iterdir() if p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX)]
    for path in leftovers:
        path.unlink(missing_ok=True)
    return leftovers


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
