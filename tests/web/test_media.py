"""Videos streamed with byte ranges and keyframes served by id and index: only known ids reach the filesystem."""

import os
from pathlib import Path

import pytest
from django.urls import reverse

from vidsearch.video.cache import open_cache
from vidsearch.web.library import engine
from vidsearch.web.library.streaming import RangeNotSatisfiable, parse_range


@pytest.fixture
def video(site, some_video, web_library):
    source = Path(open_cache(web_library.cache).entries[some_video].source)
    return reverse("video-file", args=[some_video]), source.read_bytes()


def body(response) -> bytes:
    return b"".join(response.streaming_content)


def assert_common_headers(response):
    assert response["Accept-Ranges"] == "bytes" and response["X-Content-Type-Options"] == "nosniff"


def test_the_whole_file_without_a_range(client, video):
    url, data = video
    response = client.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "video/mp4"
    assert int(response["Content-Length"]) == len(data) and body(response) == data
    assert_common_headers(response)


@pytest.mark.parametrize("header, first, last", [("bytes=0-99", 0, 99), ("bytes=100-", 100, None),
                                                 ("bytes=-10", -10, None), ("bytes=5-5", 5, 5),
                                                 ("bytes=0-99999999", 0, None)])
def test_a_range_gives_206_with_content_range(client, video, header, first, last):
    url, data = video
    response = client.get(url, HTTP_RANGE=header)
    start = first % len(data)
    end = len(data) - 1 if last is None else last
    assert response.status_code == 206 and response["Content-Range"] == f"bytes {start}-{end}/{len(data)}"
    assert body(response) == data[start:end + 1] and int(response["Content-Length"]) == end - start + 1
    assert_common_headers(response)


HUGE = "9" * 5000  # past Python's 4300-digit limit of int()


@pytest.mark.parametrize("header", ["bytes=10-5", "bytes=-0", "bytes=99999999-", f"bytes={HUGE}-",
                                    f"bytes={HUGE}-{HUGE}", "bytes=00000000000000000000099999999-"])
def test_a_range_outside_the_file_gives_416(client, video, header):
    url, data = video
    response = client.get(url, HTTP_RANGE=header)
    assert response.status_code == 416 and response["Content-Range"] == f"bytes */{len(data)}"
    assert_common_headers(response)


@pytest.mark.parametrize("header, first, last", [(f"bytes=0-{HUGE}", 0, None), (f"bytes=-{HUGE}", 0, None),
                                                 ("bytes=000000000000000000000000005-5", 5, 5)])
def test_positions_of_any_length_are_read_without_int_overflow(client, video, header, first, last):
    url, data = video
    response = client.get(url, HTTP_RANGE=header)
    end = len(data) - 1 if last is None else last
    assert response.status_code == 206 and response["Content-Range"] == f"bytes {first}-{end}/{len(data)}"
    assert body(response) == data[first:end + 1]


@pytest.mark.parametrize("header", ["bytes=abc", "items=0-10", "bytes=0-1,4-5", "bytes=-", "bytes=0-1, 3-4",
                                    "  ", "bytes 0-10"])
def test_a_range_header_it_does_not_support_is_ignored(client, video, header):
    """RFC 9110 §14.2: unknown units and ranges it does not serve (several) are ignored: the whole file, 200."""
    url, data = video
    response = client.get(url, HTTP_RANGE=header)
    assert response.status_code == 200 and "Content-Range" not in response, (header, response.status_code)
    assert body(response) == data and int(response["Content-Length"]) == len(data)
    assert_common_headers(response)


def test_head_and_unknown_ids(client, video):
    url, data = video
    head = client.head(url)
    assert head.status_code == 200 and int(head["Content-Length"]) == len(data)
    assert client.get(reverse("video-file", args=["nope"])).status_code == 404
    assert client.get("/media/..%2Fmanifest.json/video").status_code == 404
    assert client.post(url).status_code == 405


def test_keyframes_by_id_and_index(client, site, some_video, web_library):
    cache = open_cache(web_library.cache)
    frames = cache.entries[some_video].frames
    response = client.get(reverse("thumbnail", args=[some_video, len(frames) - 1]))
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    assert b"".join(response.streaming_content) == cache.frame_path(some_video, len(frames) - 1).read_bytes()
    assert response["X-Content-Type-Options"] == "nosniff"
    assert client.get(reverse("thumbnail", args=[some_video, len(frames)])).status_code == 404
    assert client.get(reverse("thumbnail", args=["nope", 0])).status_code == 404


def test_parse_range_edges():
    assert parse_range(None, 10) is None
    assert parse_range("bytes=0-", 10) == (0, 9) and parse_range("bytes=-20", 10) == (0, 9)
    assert parse_range(" bytes = 0-1", 10) is None and parse_range("bytes=1-2,3-4", 10) is None
    for header, size in [("bytes=0-0", 0), ("bytes=-5", 0)]:
        with pytest.raises(RangeNotSatisfiable):
            parse_range(header, size)


@pytest.fixture(scope="module")
def own_library(make_web_library, tmp_path_factory):
    """A library of its own whose source files the tests below replace."""
    own = make_web_library(tmp_path_factory.mktemp("replaced"), videos=2)
    return own, engine.Library.open(own.store, refresh_seconds=60.0)


@pytest.fixture
def own_video(db, own_library):
    own, library = own_library
    engine.install(library)
    video_id = sorted(record.video_id for record in own.records)[0]
    source = Path(library.cache_entry(video_id).source)
    original = source.read_bytes(), source.stat()
    yield reverse("video-file", args=[video_id]), source
    engine.install(None)
    source.unlink()
    source.write_bytes(original[0])
    os.utime(source, ns=(original[1].st_atime_ns, original[1].st_mtime_ns))


def test_an_indexed_file_is_served(client, own_video):
    url, source = own_video
    response = client.get(url)
    assert response.status_code == 200 and body(response) == source.read_bytes()


def test_a_library_file_replaced_by_a_symlink_is_not_served(client, own_video, tmp_path):
    """Even a link to a copy with the recorded size and mtime: only O_NOFOLLOW tells it from the indexed file."""
    url, source = own_video
    copy = tmp_path / "elsewhere.mp4"
    copy.write_bytes(source.read_bytes())
    status = source.stat()
    os.utime(copy, ns=(status.st_atime_ns, status.st_mtime_ns))
    source.unlink()
    source.symlink_to(copy)
    assert client.get(url).status_code == 404
    source.unlink()
    source.symlink_to("/etc/passwd")
    response = client.get(url)
    assert response.status_code == 404 and b"root:" not in response.content


@pytest.mark.parametrize("change", ["other content", "same size, touched"])
def test_a_library_file_changed_since_indexing_is_not_served(client, own_video, change):
    url, source = own_video
    if change == "other content":
        source.write_bytes(b"not what was indexed")
    else:
        os.utime(source, (source.stat().st_atime, source.stat().st_mtime + 1))
    assert client.get(url).status_code == 404
    assert client.head(url).status_code == 404
