"""Video files over HTTP with byte ranges (RFC 9110 §14): what a <video> element needs to seek.

One range per request (what browsers send): `bytes=a-b`, `bytes=a-` or `bytes=-n` gives 206 with Content-Range;
a single byte range that cannot be satisfied (past the end, last before first, `-0`) gives 416 with
`Content-Range: bytes */size`. A Range header the server does not support (several ranges, another unit, or not a
byte range at all) is ignored, as RFC 9110 §14.2 allows: the whole file with 200, as without one. Positions are read
only up to MAX_DIGITS digits (no int() of an unbounded string); a longer number is past any file's end.
Every answer says `Accept-Ranges: bytes` and `X-Content-Type-Options: nosniff`.

A library file is served only if it is still the file that was indexed: `open_recorded` opens it without following
a symbolic link (O_NOFOLLOW), and compares the open file's type, size and modification time with what the keyframe
cache recorded; the answer is then read from that open file, so nothing can be swapped in between.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from django.http import HttpResponse, StreamingHttpResponse
from django.utils.http import http_date

CHUNK = 256 * 1024
MAX_DIGITS = 18  # < 2**63: any longer position is past the end of any file
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
CONTENT_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
                 ".mkv": "video/x-matroska", ".avi": "video/x-msvideo", ".ts": "video/mp2t"}


log = logging.getLogger(__name__)


class RangeNotSatisfiable(Exception):
    pass


@dataclass(frozen=True)
class RecordedFile:
    """A library file as indexing saw it."""

    path: Path
    size: int
    mtime: float


def open_recorded(recorded: RecordedFile) -> tuple[BinaryIO, os.stat_result] | None:
    """The file opened for reading with its status, if it is still a regular file (not a symbolic link) of the
    recorded size and modification time; None otherwise (logged)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # O_NONBLOCK: a FIFO put there cannot hang us
    try:
        fd = os.open(recorded.path, flags)
    except OSError as error:
        log.warning("not serving %s: %s", recorded.path, error.strerror)
        return None
    status = os.fstat(fd)
    found = (stat.S_ISREG(status.st_mode), status.st_size, status.st_mtime)
    if found != (True, recorded.size, recorded.mtime):
        os.close(fd)
        log.warning("not serving %s: it changed since it was indexed (regular file, size, mtime: %s, expected %s)",
                    recorded.path, found, (True, recorded.size, recorded.mtime))
        return None
    return os.fdopen(fd, "rb"), status


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte, inclusive, of a single byte range; None without one or for a header to ignore;
    RangeNotSatisfiable for a byte range outside the file."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if not match or match.groups() == ("", ""):
        return None  # another unit, several ranges or no range at all: ignored (RFC 9110 §14.2)
    first, last = (_position(text) for text in match.groups())
    if first is None:  # the last n bytes
        if last == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return max(0, size - last), size - 1
    if first >= size or (last is not None and last < first):
        raise RangeNotSatisfiable(header)
    return first, min(last, size - 1) if last is not None else size - 1


def _position(digits: str) -> int | None:
    """A byte position of the header; one with more than MAX_DIGITS digits is read as 10**MAX_DIGITS (past any end)."""
    if not digits:
        return None
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= MAX_DIGITS else 10**MAX_DIGITS


def content_type_of(path: Path) -> str:
    return CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")


def ranged_file_response(handle: BinaryIO, status: os.stat_result, *, content_type: str,
                          range_header: str | None) -> HttpResponse:
    """The answer for an open file (closed with the response) and its status."""
    try:
        span = parse_range(range_header, status.st_size)
    except RangeNotSatisfiable:
        handle.close()
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{status.st_size}"
        return _common_headers(response)
    start, end = span or (0, status.st_size - 1)
    length = max(0, end - start + 1)
    response = StreamingHttpResponse(_Span(handle, start, length), status=206 if span else 200,
                                     content_type=content_type)
    response["Content-Length"] = str(length)
    if span:
        response["Content-Range"] = f"bytes {start}-{end}/{status.st_size}"
    response["Last-Modified"] = http_date(status.st_mtime)
    response["Cache-Control"] = "private, max-age=3600"
    return _common_headers(response)


def _common_headers(response: HttpResponse) -> HttpResponse:
    response["Accept-Ranges"] = "bytes"
    response["X-Content-Type-Options"] = "nosniff"
    return response


class _Span:
    """The bytes [start, start + length) of an open file, read lazily; the response closes the file when done."""

    def __init__(self, handle: BinaryIO, start: int, length: int):
        self.handle, self.start, self.length = handle, start, length

    def __iter__(self) -> Iterator[bytes]:
        self.handle.seek(self.start)
        left = self.length
        while left > 0:
            chunk = self.handle.read(min(CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk

    def close(self) -> None:
        self.handle.close()
