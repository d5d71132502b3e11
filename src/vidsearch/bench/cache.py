"""The keyframe cache's manifest at library scale: open a cache, look a video up, add one video.

A cache of `--entries` videos (12 keyframes each, as `vidsearch frames` writes them) in the SQLite layout (version 2),
against the baseline, the whole-file JSON manifest of version 1, at `--baseline-entries` (parsing it takes memory in
proportion: about 5 KB a video). Both layouts are also measured at the baseline's size, for the ratio. "add one" is
what a new video costs the manifest: version 2 writes its frames and row under the cache lock (`store_entry`),
version 1 rewrote the whole manifest. Medians of `--repeat` runs; no frames are decoded.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Iterator

from vidsearch.bench.common import emit, log, median, summary, time_calls
from vidsearch.config import FrameConfig
from vidsearch.fsutil import atomic_write_text
from vidsearch.video import cache as cache_module

FRAMES = 12
CONFIG = FrameConfig(frames=FRAMES, size=224)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--entries", type=int, default=1_000_000, help="videos in the SQLite cache")
    parser.add_argument("--baseline-entries", type=int, default=100_000, help="videos in the JSON (v1) baseline")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", help="where to build the caches (default: a temporary directory)")


def run(args: argparse.Namespace) -> None:
    if args.quick:
        args.entries, args.baseline_entries, args.repeat = 20_000, 5_000, 3
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        small_v1 = _measure_v1(root / "v1", args.baseline_entries, args.repeat)
        small_v2 = _measure_v2(root / "v2-small", args.baseline_entries, args.repeat)
        large_v2 = _measure_v2(root / "v2", args.entries, args.repeat) if args.entries != args.baseline_entries \
            else small_v2
    summary("cache", small_v1["open_s"] / small_v2["open_s"], entries=args.entries,
            open_s=large_v2["open_s"], lookup_ms=large_v2["lookup_ms"], add_one_ms=large_v2["add_one_ms"],
            baseline_entries=args.baseline_entries, baseline_open_s=small_v1["open_s"],
            baseline_add_one_ms=small_v1["add_one_ms"], add_one_ratio=round(
                small_v1["add_one_ms"] / small_v2["add_one_ms"], 1))


def _entries(count: int, start: int = 0) -> Iterator[dict]:
    for n in range(start, start + count):
        video_id = f"video{n:07d}"
        yield {"id": video_id, "source": f"/library/videos/{video_id}.mp4", "size": 10_000_000 + n,
               "mtime": 1_700_000_000.0 + n, "status": "ok", "error": None, "duration": 15.0, "fps": 30.0,
               "width": 640, "height": 360, "timestamps": [float(i) for i in range(FRAMES)],
               "frames": [f"frames/{video_id}/{i:04d}.jpg" for i in range(FRAMES)], "moments": []}


def _jpegs() -> list[bytes]:
    import numpy as np

    return [cache_module.jpeg_bytes(np.full((224, 224, 3), i, np.uint8), 90) for i in range(FRAMES)]


def _measure_v2(root: Path, count: int, repeat: int) -> dict:
    started = time.perf_counter()
    (root / cache_module.FRAMES_DIR).mkdir(parents=True)
    cache_module._create(root, CONFIG, entries=_entries(count))
    log(f"v2: {count} entries written in {time.perf_counter() - started:.1f} s")
    opened = time_calls(lambda: _open_and_count(root), repeat=repeat)
    cache = cache_module.open_cache(root)
    lookups = time_calls(lambda: cache.entry(f"video{count // 2:07d}"), repeat=max(repeat, 100))
    database, jpegs, added = cache_module.CacheDatabase(root / cache_module.DATABASE), _jpegs(), iter(range(10**9))
    adds = time_calls(lambda: cache_module.store_entry(root, database, next(_entries(1, count + next(added))), jpegs),
                      repeat=max(repeat, 20))
    result = {"layout": "sqlite (v2)", "entries": count, "open_s": round(median(opened), 4),
              "lookup_ms": round(median(lookups) * 1e3, 3), "add_one_ms": round(median(adds) * 1e3, 2),
              "bytes": sum(p.stat().st_size for p in root.glob("videos.sqlite3*"))}
    emit(result)
    return result


def _open_and_count(root: Path) -> None:
    cache = cache_module.open_cache(root)
    cache.entry("video0000000")
    cache.count()


def _measure_v1(root: Path, count: int, repeat: int) -> dict:
    """Version 1: one JSON file with every entry, parsed whole at open, rewritten whole for each new video."""
    root.mkdir(parents=True)
    manifest = {"format": cache_module.FORMAT, "version": 1, "vidsearch": "0.1.0",
                "settings": dataclasses.asdict(CONFIG), "videos": {e["id"]: e for e in _entries(count)}}
    atomic_write_text(root / cache_module.MANIFEST, json.dumps(manifest, indent=1) + "\n")
    opened = time_calls(lambda: _open_and_count(root), repeat=repeat)
    adds = time_calls(lambda: atomic_write_text(root / cache_module.MANIFEST, json.dumps(manifest, indent=1) + "\n"),
                      repeat=repeat)
    result = {"layout": "json (v1)", "entries": count, "open_s": round(median(opened), 4),
              "add_one_ms": round(median(adds) * 1e3, 2), "bytes": (root / cache_module.MANIFEST).stat().st_size}
    emit(result)
    return result
