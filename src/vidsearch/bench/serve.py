"""API latency of `vidsearch serve` at a constant request rate against a 10 000-video store, for each engine.

The model (`--model`): ViT-B/32 towers with random weights (open_clip `ViT-B-32`, no pretrained weights, seed 0;
the default, what a deployment runs) or the tiny demo-sized model (`tiny`). Each is served twice in the same run:
PyTorch eager (`pytorch`) and its ONNX Runtime int8 export (`onnx_int8`: `vidsearch.model.export`, dynamic
quantisation), exported once into `--workdir` and reused while it is this model's (exporting ViT-B/32 takes minutes).
Each engine gets a store of its own: one row per video, random unit vectors stamped with the engine's fingerprint,
so the engine's real text encoder encodes every query; its keyframe cache manifest names one keyframe per video (the
API only links to it). The server (waitress, production settings) runs in a child process on 127.0.0.1 and loads
the model the store names. An open-loop client sends `GET /api/search` on a fixed schedule, each request on its own
thread, so a slow answer never delays the next send; latency counts from the scheduled send time. Every query is
distinct within a run (no query-cache hits); both engines get the same queries.
Per engine, `overhead`: HTTP p50 / the same queries through `Searcher.search` in this process, without HTTP.
Summary ratio: PyTorch HTTP p50 / ONNX int8 HTTP p50 (the target is on int8).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlencode

import numpy as np

from vidsearch import __version__
from vidsearch.bench.common import emit, log, percentile, summary
from vidsearch.config import FrameConfig, to_dict
from vidsearch.fsutil import atomic_write_text
from vidsearch.model.export import export_model
from vidsearch.model.source import ModelSource
from vidsearch.runtime.exported import is_exported_dir, read_exported_config
from vidsearch.store import store as feature_store
from vidsearch.store.store import RowMeta
from vidsearch.video import cache

MODELS = {"vit-b-32": ModelSource(backbone="ViT-B-32"), "tiny": ModelSource(backbone="vidsearch-tiny")}
ENGINES = ("pytorch", "onnx_int8")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white")
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
DIRECTIONS = ("left", "right", "up", "down")
TEMPLATES = ("a {c} {s} moves {d}", "the {c} {s} slides {d}", "a {c} {s} drifting {d} slowly",
             "{c} {s} going {d} on a dark background", "a small {c} {s} heading {d}")
TARGET_P50_MS = 30.0
REQUEST_TIMEOUT_S = 10.0
START_TIMEOUT_S = 300.0


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=MODELS, default="vit-b-32",
                        help="towers with random weights: ViT-B/32 (default) or the tiny demo-sized model")
    parser.add_argument("--workdir", type=Path, help="where the stores are built and the int8 export is kept between "
                        "runs (default: a temporary directory, removed after the run)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--videos", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long requests are sent")
    parser.add_argument("-k", type=int, default=10, help="videos per answer")
    parser.add_argument("--threads", type=int, default=4, help="the server's request threads")


@dataclass(frozen=True)
class Sample:
    latency_ms: float  # from the scheduled send time to the end of the answer
    status: int | None  # None: no answer (connection error or timeout)
    finished: float  # time.perf_counter() at the end of the answer


def queries(count: int, *, seed: int = 0) -> list[str]:
    """`count` distinct captions of the moving-shapes vocabulary, shuffled."""
    every = [t.format(c=c, s=s, d=d) for t, c, s, d in itertools.product(TEMPLATES, COLOURS, SHAPES, DIRECTIONS)]
    if count > len(every):
        raise ValueError(f"at most {len(every)} distinct queries; lower --rate or --seconds")
    return random.Random(seed).sample(every, count)


def engine_sources(model: str, workdir: Path) -> dict[str, ModelSource]:
    """Each engine's model: the PyTorch one (random weights) and its int8 export in `workdir`, exported once and
    reused while its source fingerprint is this model's."""
    pytorch = MODELS[model]
    exported = workdir / f"{model}-int8"
    loaded = pytorch.load()
    if not (is_exported_dir(exported)
            and read_exported_config(exported).get("source_fingerprint") == loaded.fingerprint):
        shutil.rmtree(exported, ignore_errors=True)
        log(f"exporting {model} to ONNX int8 in {exported} (once: kept for the next run with this --workdir)")
        started = time.perf_counter()
        export_model(loaded, exported, int8=True)
        emit({"bench": "serve", "measure": "export", "model": model,
              "seconds": round(time.perf_counter() - started, 1)})
    return {"pytorch": pytorch, "onnx_int8": ModelSource(exported=str(exported.resolve()))}


def build_library(root: Path, *, videos: int, source: ModelSource) -> Path:
    """A store of `videos` random rows for the model of `source`, with its keyframe cache manifest, made afresh in
    `root`; returns the store."""
    shutil.rmtree(root, ignore_errors=True)
    fingerprint, dim = _model_shape(source)
    vectors = np.random.default_rng(0).standard_normal((videos, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"v{i:05d}" for i in range(videos)]
    captions = queries(min(videos, 840), seed=1)
    rows = [RowMeta(video_id, category=SHAPES[i % len(SHAPES)], thumbnail=f"frames/{video_id}/0000.jpg",
                    captions=(captions[i % len(captions)],)) for i, video_id in enumerate(ids)]
    frames = root / "cache"
    _write_cache_manifest(frames, ids)
    feature_store.write(root / "store", {"video_feature": vectors}, fingerprint=fingerprint, rows=rows,
                        info={"model": source.to_dict(), "frames": str(frames.resolve())})
    return root / "store"


def _model_shape(source: ModelSource) -> tuple[str, int]:
    from vidsearch.store.indexer import query_encoder

    encoder = query_encoder(source.load())
    return encoder.fingerprint, int(encoder.encode(["a"]).shape[-1])


def _write_cache_manifest(root: Path, ids: list[str]) -> None:
    """The documented keyframe cache manifest (vidsearch.video.cache), one keyframe per video, no pixels."""
    (root / cache.FRAMES_DIR).mkdir(parents=True, exist_ok=True)
    entry = {"size": 0, "mtime": 0.0, "status": "ok", "error": None,
             "duration": 8.0, "fps": 4.0, "width": 96, "height": 96, "timestamps": [0.0], "moments": []}
    videos = {video_id: {**entry, "id": video_id, "source": str(root / "missing" / f"{video_id}.mp4"),
                         "frames": [f"{cache.FRAMES_DIR}/{video_id}/0000.jpg"]}  # a source per video, as a cache has
              for video_id in ids}
    manifest = {"format": cache.FORMAT, "version": 1, "vidsearch": __version__,  # version 1: entries inline
                "settings": to_dict(FrameConfig()), "videos": videos}
    atomic_write_text(root / cache.MANIFEST, json.dumps(manifest))


def in_process_ms(store: Path, texts: list[str], *, k: int) -> list[float]:
    """Searcher.search on each text (cold query cache), milliseconds."""
    from vidsearch.store.indexer import open_searcher
    from vidsearch.store.search import SearchOptions

    searcher = open_searcher(store)
    searcher.search("warm up", SearchOptions(k=k))
    times = []
    for text in texts:
        started = time.perf_counter()
        searcher.search(text, SearchOptions(k=k))
        times.append((time.perf_counter() - started) * 1e3)
    return times


def start_server(store: Path, *, port: int, threads: int, log_path: Path) -> subprocess.Popen:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DJANGO_")}
    command = [sys.executable, "-m", "vidsearch", "serve", "--store", str(store), "--port", str(port),
               "--threads", str(threads)]
    with open(log_path, "w") as server_log:
        return subprocess.Popen(command, stdout=server_log, stderr=subprocess.STDOUT, env=environment)


def wait_until_up(base: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with status {server.returncode}")
        if get(f"{base}/api/health", time.perf_counter()).status == 200:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the server did not answer within {START_TIMEOUT_S:.0f} s")


def get(url: str, scheduled: float) -> Sample:
    try:
        with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_S) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except OSError:
        status = None
    finished = time.perf_counter()
    return Sample((finished - scheduled) * 1e3, status, finished)


@dataclass(frozen=True)
class Run:
    """What an open-loop run observed: its schedule (N sends at `rate` from `started`) and every answer."""

    started: float  # time.perf_counter() at the first scheduled send
    rate: float
    samples: list[Sample]


def open_loop(urls: list[str], *, rate: float, fetch: Callable[[str, float], Sample] = get) -> Run:
    """GET each url at its scheduled time (i / rate s after the start) on its own thread; the samples in order."""
    workers = max(8, int(rate * REQUEST_TIMEOUT_S) + 1)  # enough that no send ever waits for a free thread
    start = time.perf_counter() + 0.05
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = []
        for i, url in enumerate(urls):
            scheduled = start + i / rate
            time.sleep(max(0.0, scheduled - time.perf_counter()))
            futures.append(pool.submit(fetch, url, scheduled))
        return Run(start, rate, [future.result() for future in futures])


def latency_summary(run: Run) -> dict[str, Any]:
    """Latency percentiles of the answers, errors, and `achieved_rate`: answers (status 200) per second over the run,
    from the first scheduled send to the end of the schedule or the last answer, whichever is later. A server that
    keeps up achieves the offered rate; one that falls behind (or fails) achieves what it really answered."""
    ok = [s for s in run.samples if s.status == 200]
    latencies = [s.latency_ms for s in ok]
    schedule_end = run.started + len(run.samples) / run.rate
    window = max([schedule_end, *(s.finished for s in ok)]) - run.started
    return {"requests": len(run.samples), "errors": len(run.samples) - len(ok),
            "error_rate": round((len(run.samples) - len(ok)) / max(1, len(run.samples)), 4),
            "achieved_rate": round(len(ok) / window, 2) if window > 0 else 0.0,
            **{f"p{q}_ms": round(percentile(latencies, q), 2) if ok else None for q in (50, 95, 99)},
            "max_ms": round(max(latencies), 2) if ok else None}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(args: argparse.Namespace) -> None:
    videos, seconds = (2_000, 8.0) if args.quick else (args.videos, args.seconds)
    count = int(args.rate * seconds)
    texts = queries(count + 50)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="vidsearch-bench-serve-"))
    try:
        results = {engine: _measure_engine(engine, source, workdir / engine, texts, args, videos=videos, count=count)
                   for engine, source in engine_sources(args.model, workdir).items()}
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    int8, pytorch = results["onnx_int8"], results["pytorch"]
    ratio = pytorch["p50_ms"] / int8["p50_ms"] if pytorch["p50_ms"] and int8["p50_ms"] else float("nan")
    summary("serve", ratio, baseline="PyTorch HTTP p50", model=args.model, videos=videos, rate=args.rate,
            **{key: {engine: result[key] for engine, result in results.items()}
               for key in ("p50_ms", "p95_ms", "p99_ms", "error_rate", "achieved_rate", "overhead")},
            target_met=bool(int8["p50_ms"] is not None and int8["p50_ms"] <= TARGET_P50_MS and not int8["errors"]))


def _measure_engine(engine: str, source: ModelSource, root: Path, texts: list[str], args: argparse.Namespace, *,
                    videos: int, count: int) -> dict[str, Any]:
    log(f"{engine}: building a {videos}-video store in {root}")
    store = build_library(root, videos=videos, source=source)
    baseline = in_process_ms(store, texts[count:], k=args.k)
    emit({"bench": "serve", "measure": "in_process", "model": args.model, "engine": engine, "videos": videos,
          "queries": len(baseline), "p50_ms": round(percentile(baseline, 50), 2),
          "p95_ms": round(percentile(baseline, 95), 2)})
    http = _measure_http(store, texts, args, count=count, workdir=root)
    http["overhead"] = round(http["p50_ms"] / percentile(baseline, 50), 3) if http["p50_ms"] else None
    emit({"bench": "serve", "measure": "http", "model": args.model, "engine": engine, "videos": videos,
          "rate": args.rate, "k": args.k, **http})
    return http


def _measure_http(store: Path, texts: list[str], args: argparse.Namespace, *, count: int,
                  workdir: Path) -> dict[str, Any]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(store, port=port, threads=args.threads, log_path=workdir / "server.log")
    try:
        wait_until_up(base, server)
        url = lambda text: f"{base}/api/search?{urlencode({'q': text, 'k': args.k})}"  # noqa: E731
        for text in texts[count:count + 20]:  # warm up: first requests load the keyframe cache manifest
            get(url(f"warm {text}"), time.perf_counter())
        log(f"sending {count} requests at {args.rate:g}/s")
        run = open_loop([url(text) for text in texts[:count]], rate=args.rate)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return latency_summary(run)
