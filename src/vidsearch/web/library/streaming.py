"""Video files over HTTP with byte ranges (RFC 9110 §14): what a <video> element needs to seek.

One range per request (what browsers send): `bytes=a-b`, `bytes=a-` or `bytes=-n` gives 206 with Content-Range;
a single byte range that cannot be satisfied (past the end, last before first, `-0`) gives 416 with
`Content-Range: bytes */size`. A Range header the server does not support (several ranges, another unit, or not a
byte range at all) is ignored, as RFC 9110 §14.2 allows: the whole file with 200, as without one. Positions are read
only up to MAX_DIGITS digits (no int() of an unbounded string); a longer number is past any file's end.
Every answer says `Accept-Ranges: bytes` and `X-Content-Type-Options: nosniff`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from django.http import HttpResponse, StreamingHttpResponse
from django.utils.http import http_date

CHUNK = 256 * 1024
MAX_DIGITS = 18  # < 2**63: any longer position is past the end of any file
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
CONTENT_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
                 ".mkv": "video/x-matroska", ".avi": "video/x-msvideo", ".ts": "video/mp2t"}


class RangeNotSatisfiable(Exception):
    pass


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


def ranged_file_response(path: Path, *, range_header: str | None) -> HttpResponse:
    stat = path.stat()
    try:
        span = parse_range(range_header, stat.st_size)
    except RangeNotSatisfiable:
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{stat.st_size}"
        return _common_headers(response)
    start, end = span or (0, stat.st_size - 1)
    length = max(0, end - start + 1)
    response = StreamingHttpResponse(_read(path, start, length), status=206 if span else 200,
                                     content_type=content_type_of(path))
    response["Content-Length"] = str(length)
    if span:
        response["Content-Range"] = f"bytes {start}-{end}/{stat.st_size}"
    response["Last-Modified"] = http_date(stat.st_mtime)
    response["Cache-Control"] = "private, max-age=3600"
    return _common_headers(response)


def _common_headers(response: HttpResponse) -> HttpResponse:
    response["Accept-Ranges"] = "bytes"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _read(path: Path, start: int, length: int) -> Iterator[bytes]:
    """The bytes [start, start + length), read lazily: nothing is opened unless the body is sent."""
    with open(path, "rb") as handle:
        handle.seek(start)
        while length > 0:
            chunk = handle.read(min(CHUNK, length))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk
