"""`vidsearch serve` (waitress, production settings) and `vidsearch index --data` filling the caption database."""

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from vidsearch.cli import main as cli


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fetch(url: str, **headers: str):
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def wait_until_up(base: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server stopped"
        try:
            if fetch(f"{base}/api/health")[0] == 200:
                return
        except OSError:
            time.sleep(0.3)
    raise AssertionError("the server did not come up")


@pytest.fixture
def server(web_library, tmp_path):
    port = free_port()
    command = [sys.executable, "-m", "vidsearch", "serve", "--store", str(web_library.store), "--port", str(port)]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}  # production settings
    log = open(tmp_path / "serve.log", "w+")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True, env=environment)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base, process)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_serve_answers_pages_api_static_files_and_ranges(server, web_library, some_video):
    status, _, body = fetch(f"{server}/api/search?q=a+red+circle&k=2")
    assert status == 200 and len(json.loads(body)["hits"]) == 2
    status, headers, body = fetch(f"{server}/?q=a+red+circle")
    assert status == 200 and headers["X-Content-Type-Options"] == "nosniff" and b'class="card' in body
    status, headers, _ = fetch(f"{server}/static/library/site.css")
    assert status == 200 and headers["Content-Type"].startswith("text/css")
    status, headers, body = fetch(f"{server}/media/{some_video}/video", Range="bytes=0-15")
    assert status == 206 and len(body) == 16 and headers["Content-Range"].startswith("bytes 0-15/")
    assert headers["Content-Type"] == "video/mp4" and headers["Accept-Ranges"] == "bytes"
    assert fetch(f"{server}/media/{some_video}/video", Range="bytes=9999999999-")[0] == 416
    assert fetch(f"{server}/media/{some_video}/video", Range="bytes=x")[0] == 200  # ignored (RFC 9110)
    assert fetch(f"{server}/api/search?q=" + "a" * 300)[0] == 400


def test_index_with_data_fills_the_caption_database(web_library, capsys, tmp_path):
    assert cli(["index", "--model", "vidsearch-tiny", "--random-weights", "--frames", str(web_library.cache),
                "--store", str(tmp_path / "store"), "--data", str(web_library.manifest)]) == 0
    assert "caption database: 8 videos" in capsys.readouterr().out
    with sqlite3.connect(tmp_path / "store" / "site.sqlite3") as db:
        clips = dict(db.execute("SELECT video_id, sentences FROM library_videoclip"))
    assert {r.video_id: "\n".join(r.captions) for r in web_library.records} == clips
