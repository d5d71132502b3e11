"""Load on `GET /api/search` of `vidsearch serve` over a 10 000-video store: constant rates, a saturation search, and
the same rates while uploads are being ingested; for PyTorch and ONNX int8 in the same run.

Reuses the serving benchmark's parts (`vidsearch.bench.serve`): its model (`--model`: ViT-B/32 with random weights by
default, or `tiny`), its engines (PyTorch eager, then the model's ONNX int8 export, kept in `--workdir`), a store per
engine, server child process (waitress, production settings, 127.0.0.1 only) and open-loop client (each request sent
on schedule on its own thread, latency from the scheduled send time). Every query is distinct across the whole run,
so the query cache never answers.

- Each rate of `--rates` is measured twice, `--seconds` each: idle, then while a logged-in session uploads a
  synthetic clip every `--upload-every` seconds through the real upload form (`POST /upload/`); the server checks
  each upload in a child process and ingests it on its background thread (keyframes → the engine's features → a new
  store version → the Searcher follows it). Before the next idle measurement the ingest queue is left to drain.
- `--saturation` (run first, on the store as built): offered rates grow ×1.25 from the lowest of `--rates` (at most
  `--max-steps` steps of `--step-seconds`) until one is not sustained: error rate above 1 %, p95 above `--slo-ms`, or fewer answers per
  second than 95 % of the offered rate. The saturation point is the last rate sustained.
Everything above runs once per engine, on that engine's store and server.
Summary ratio: the largest p95 under uploads / p95 idle at the same rate, over both engines (target ≤ 2).
"""

from __future__ import annotations

import argparse
import http.cookiejar
import itertools
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlencode

from vidsearch.bench import serve
from vidsearch.bench.common import emit, log, summary
from vidsearch.data.manifest import load_manifest
from vidsearch.data.synthetic import generate_library

USER = "bench-uploader"
ERROR_LIMIT = 0.01
SUSTAINED = 0.95
DRAIN_TIMEOUT_S = 180.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    serve.add_model_arguments(parser)
    parser.add_argument("--videos", type=int, default=10_000)
    parser.add_argument("--rates", type=_rates, default=[20.0, 50.0, 100.0], help="requests per second, e.g. 20,50")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each measurement")
    parser.add_argument("--upload-every", type=float, default=2.0, help="seconds between uploads (0: no uploads)")
    parser.add_argument("--saturation", action="store_true", help="also search for the highest sustained rate")
    parser.add_argument("--step-seconds", type=float, default=6.0, help="length of each saturation step")
    parser.add_argument("--max-steps", type=int, default=12)
    parser.add_argument("--slo-ms", type=float, default=250.0, help="p95 a sustained rate must stay under")
    parser.add_argument("-k", type=int, default=10, help="videos per answer")
    parser.add_argument("--threads", type=int, default=4, help="the server's request threads")


def _rates(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def distinct_queries() -> Iterator[str]:
    """Captions of the moving-shapes vocabulary, then the same with '(take n)' appended: never a repeat."""
    every = serve.queries(len(serve.TEMPLATES) * len(serve.COLOURS) * len(serve.SHAPES) * len(serve.DIRECTIONS))
    yield from every
    for take in itertools.count(2):
        yield from (f"{text} (take {take})" for text in every)


def run(args: argparse.Namespace) -> None:
    if args.quick:
        args.videos, args.rates, args.seconds, args.step_seconds, args.max_steps = 1_000, [10.0], 5.0, 4.0, 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="vidsearch-bench-load-"))
    try:
        results = {}
        for engine, source in serve.engine_sources(args.model, workdir).items():
            log(f"{engine}: building a {args.videos}-video store in {workdir / engine}")
            store = serve.build_library(workdir / engine, videos=args.videos, source=source)
            results[engine] = _measure_all(store, args, engine=engine, workdir=workdir / engine)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    ratios = {engine: max((round(r["upload_p95_ratio"], 3) for r in result["rates"] if r.get("upload_p95_ratio")),
                          default=None) for engine, result in results.items()}
    worst = max((ratio for ratio in ratios.values() if ratio is not None), default=float("nan"))
    summary("load", worst, model=args.model, videos=args.videos, rates=args.rates, seconds=args.seconds,
            saturation_rate={engine: result.get("saturation_rate") for engine, result in results.items()},
            upload_p95_ratio=ratios, target_met=worst <= 2.0)


def _measure_all(store: Path, args: argparse.Namespace, *, engine: str, workdir: Path) -> dict[str, Any]:
    texts = distinct_queries()
    results: dict[str, Any] = {"rates": []}
    with running_server(store, threads=args.threads, workdir=workdir) as base:
        _warm_up(base, texts, k=args.k)
        if args.saturation:  # first, while the store is as built: uploads add segments
            results["saturation_rate"] = find_saturation(base, texts, args, engine=engine)
        uploads = upload_source(base, store, workdir) if args.upload_every > 0 else None
        for rate in args.rates:
            results["rates"].append(_measure_rate(base, texts, rate, args, uploads, engine=engine))
    return results


@contextmanager
def running_server(store: Path, *, threads: int, workdir: Path) -> Iterator[str]:
    os.environ.setdefault("VIDSEARCH_UPLOADS_PER_USER", "1000")  # its user uploads faster than the server ingests
    port = serve.free_port()
    base = f"http://127.0.0.1:{port}"
    server = serve.start_server(store, port=port, threads=threads, log_path=workdir / "server.log")
    try:
        serve.wait_until_up(base, server)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=60)


def _warm_up(base: str, texts: Iterator[str], *, k: int) -> None:
    for text in itertools.islice(texts, 20):
        serve.get(_search_url(base, text, k=k), time.perf_counter())


def _search_url(base: str, text: str, *, k: int) -> str:
    return f"{base}/api/search?{urlencode({'q': text, 'k': k})}"


def measure(base: str, texts: Iterator[str], *, rate: float, seconds: float, k: int) -> dict[str, Any]:
    """One open-loop run at `rate` for `seconds`: latency percentiles, errors and the achieved rate of answers."""
    urls = [_search_url(base, text, k=k) for text in itertools.islice(texts, int(rate * seconds))]
    return serve.latency_summary(serve.open_loop(urls, rate=rate))


def _measure_rate(base: str, texts: Iterator[str], rate: float, args: argparse.Namespace,
                  uploads: UploadSource | None, *, engine: str) -> dict[str, Any]:
    log(f"{engine}: {rate:g} requests/s, idle")
    idle = measure(base, texts, rate=rate, seconds=args.seconds, k=args.k)
    emit({"bench": "load", "measure": "idle", "model": args.model, "engine": engine, "rate": rate, **idle})
    result = {"rate": rate, "idle": idle}
    if uploads is None:
        return result
    log(f"{engine}: {rate:g} requests/s, uploading a clip every {args.upload_every:g} s")
    busy, ingest = uploads.during(lambda: measure(base, texts, rate=rate, seconds=args.seconds, k=args.k),
                                  every_s=args.upload_every)
    ratio = busy["p95_ms"] / idle["p95_ms"] if busy["p95_ms"] and idle["p95_ms"] else None
    emit({"bench": "load", "measure": "uploads", "model": args.model, "engine": engine, "rate": rate, **busy,
          **ingest, "p95_ratio": round(ratio, 3) if ratio else None})
    return {**result, "uploads": busy, "ingest": ingest, "upload_p95_ratio": ratio}


def find_saturation(base: str, texts: Iterator[str], args: argparse.Namespace, *, engine: str) -> float | None:
    """The highest offered rate sustained (see the module docstring), growing ×1.25 from the lowest of --rates."""
    sustained, rate = None, min(args.rates)
    for _ in range(args.max_steps):
        report = measure(base, texts, rate=rate, seconds=args.step_seconds, k=args.k)
        held = is_sustained(report, rate=rate, slo_ms=args.slo_ms)
        emit({"bench": "load", "measure": "saturation_step", "model": args.model, "engine": engine, "rate": rate,
              "sustained": held, **report})
        if not held:
            break
        sustained, rate = rate, round(rate * 1.25, 1)
        time.sleep(2.0)  # let the last step's stragglers finish
    return sustained


def is_sustained(report: dict[str, Any], *, rate: float, slo_ms: float) -> bool:
    return (report["error_rate"] <= ERROR_LIMIT and report["p95_ms"] is not None and report["p95_ms"] <= slo_ms
            and report["achieved_rate"] >= SUSTAINED * rate)


# --- uploads through the site's upload form ---------------------------------------------------------------------------

class UploadSource:
    """A logged-in session and the clips (path, captions) it uploads, in turn, through `POST /upload/`."""

    def __init__(self, base: str, session: Session, clips: list[tuple[Path, list[str]]]):
        self.base, self.session, self.clips = base, session, itertools.cycle(clips)

    def during(self, work: Callable[[], dict[str, Any]], *,
               every_s: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """work() while a clip is uploaded every `every_s` s; then waits until the uploads are ingested."""
        rows_before = self.rows()
        stop = threading.Event()
        with ThreadPoolExecutor(max_workers=1) as pool:
            uploading = pool.submit(self._upload_until, stop, every_s)
            time.sleep(min(every_s, 2.0))  # the first upload is being ingested when the measurement starts
            result = work()
            stop.set()
            statuses = uploading.result()
        accepted = statuses.count(200)
        drained_s = self._wait_for_rows(rows_before + accepted)
        return result, {"uploads_sent": len(statuses), "uploads_accepted": accepted,
                        "rows_added": self.rows() - rows_before, "drain_s": round(drained_s, 1)}

    def _upload_until(self, stop: threading.Event, every_s: float) -> list[int | None]:
        statuses = []
        while not stop.is_set():
            path, captions = next(self.clips)
            statuses.append(upload(self.session, self.base, path, caption="\n".join(captions)))
            stop.wait(every_s)
        return statuses

    def rows(self) -> int:
        with urllib.request.urlopen(f"{self.base}/api/health", timeout=serve.REQUEST_TIMEOUT_S) as response:
            return json.loads(response.read())["rows"]

    def _wait_for_rows(self, rows: int) -> float:
        started = time.monotonic()
        while self.rows() < rows and time.monotonic() - started < DRAIN_TIMEOUT_S:
            time.sleep(0.5)
        return time.monotonic() - started


def upload_source(base: str, store: Path, workdir: Path) -> UploadSource:
    """A user made for the run, logged in, with 40 synthetic clips (8 s, 96 px, H.264) to upload."""
    session = login(base, USER, create_user(store, USER))
    manifest = generate_library(workdir / "clips", videos=40, seed=11, size=96, seconds=8.0, fps=4.0)
    clips = [(manifest.parent / record.source, record.captions) for record in load_manifest(manifest)]
    return UploadSource(base, session, clips)


def create_user(store: Path, username: str) -> str:
    """A user of the store's site (createsuperuser in a child process, as an operator would); its password."""
    password = secrets.token_urlsafe(16)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DJANGO_")}
    environment["DJANGO_SUPERUSER_PASSWORD"] = password
    command = [sys.executable, "-m", "vidsearch.web.manage", "--store", str(store), "createsuperuser", "--noinput",
               "--username", username, "--email", f"{username}@example.invalid"]
    subprocess.run(command, check=True, capture_output=True, env=environment)
    return password


@dataclass(frozen=True)
class Session:
    """A browser-like client: cookies kept, redirects followed."""

    opener: urllib.request.OpenerDirector
    jar: http.cookiejar.CookieJar

    def cookie(self, name: str) -> str | None:
        return next((cookie.value for cookie in self.jar if cookie.name == name), None)


def login(base: str, username: str, password: str) -> Session:
    """A session logged in through the login form (the CSRF token from its cookie)."""
    jar = http.cookiejar.CookieJar()
    session = Session(urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar)), jar)
    session.opener.open(f"{base}/accounts/login/", timeout=serve.REQUEST_TIMEOUT_S).read()
    form = {"username": username, "password": password, "csrfmiddlewaretoken": session.cookie("csrftoken")}
    session.opener.open(f"{base}/accounts/login/", data=urlencode(form).encode(),
                        timeout=serve.REQUEST_TIMEOUT_S).read()
    if session.cookie("sessionid") is None:
        raise RuntimeError("the upload user could not log in")
    return session


def upload(session: Session, base: str, path: Path, *, caption: str) -> int | None:
    """POST one video through the upload form; the final status (200 after the redirect to the job page)."""
    fields = {"csrfmiddlewaretoken": session.cookie("csrftoken"), "category": "uploaded", "sentences": caption}
    body, content_type = _multipart(fields, "file", path)
    request = urllib.request.Request(f"{base}/upload/", data=body, headers={"Content-Type": content_type})
    try:
        with session.opener.open(request, timeout=60) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def _multipart(fields: dict[str, str | None], file_field: str, path: Path) -> tuple[bytes, str]:
    boundary = secrets.token_hex(16)
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{path.name}"\r\n'
                 f"Content-Type: video/mp4\r\n\r\n".encode() + path.read_bytes() + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
