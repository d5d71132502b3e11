"""The thesis' table 3.2: save + load + use 10 000 × (text 1×512 + video 12×512) float32 features, five ways.

Workload per method (the thesis §3.4.3): save everything once, load it, turn it back into torch tensors, then use them:
the thesis' slice and indexing, and one exact search of one text feature against every video frame vector, so every
byte is read (a memory-mapped store that only touched a few pages would otherwise look free). Load + use is timed
twice: cold, after the files' pages were dropped from the page cache (`posix_fadvise(DONTNEED)` after an fsync: no
root needed; where the OS ignores it the figure is a warm one), then hot, right after. Methods: the thesis' four (1: pickle of torch tensors;
2: torch → numpy, pickled; 3: a pandas DataFrame of torch tensors, pickled; 4: a DataFrame of numpy arrays,
pickled — the thesis' choice) and vidsearch's feature store (durable: hashed, fsynced, atomically published; memory-mapped on load).
The pickle files exist only here, written and read back by this benchmark from data it generated itself.
Method 3 runs in a child process under an address-space limit: each row's tensor is a view of one shared storage,
and pickling a view writes the whole storage, so the file grows as rows × storage (the thesis saw MemoryError).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import pickle
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from vidsearch.bench.common import emit, log, median, summary
from vidsearch.store.store import FeatureDatabase

FRAMES, DIM = 12, 512
CHILD_MEMORY_LIMIT = 4 << 30
CHILD_TIMEOUT_S = 120


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None, help="where files are written (default: a temp dir)")


def make_features(rows: int) -> dict[str, Any]:
    """The thesis' simulated data: video_id numpy int [N]; text_feature [N, 1, 512], video_feature [N, 12, 512]."""
    generator = torch.Generator().manual_seed(0)
    return {"video_id": np.arange(rows), "text_feature": torch.rand(rows, 1, DIM, generator=generator),
            "video_feature": torch.rand(rows, FRAMES, DIM, generator=generator)}


def use(video_id: Any, text: torch.Tensor, video: torch.Tensor) -> float:
    """The thesis' slice and two indexings, then an exact search: the best score of one text feature over all frames."""
    query = text[int(video_id[7])][0]
    window = video[10:20]
    return float(torch.dot(window[3, 0], query)) + float((video.reshape(-1, video.shape[-1]) @ query).max())


def drop_page_cache(target: Path) -> None:
    """Ask the kernel to forget the cached pages of every file under `target` (written back first)."""
    files = [target] if target.is_file() else [p for p in target.rglob("*") if p.is_file()]
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def pickle_torch(path: Path, data: dict[str, Any]) -> Callable[[], float]:
    path.write_bytes(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))
    return lambda: _use_dict(pickle.loads(path.read_bytes()))


def pickle_numpy(path: Path, data: dict[str, Any]) -> Callable[[], float]:
    arrays = {key: np.asarray(value) for key, value in data.items()}
    path.write_bytes(pickle.dumps(arrays, protocol=pickle.HIGHEST_PROTOCOL))
    return lambda: _use_dict({k: torch.from_numpy(v) for k, v in pickle.loads(path.read_bytes()).items()})


def pandas_torch(path: Path, data: dict[str, Any]) -> Callable[[], float]:
    import pandas as pd

    frame = pd.DataFrame({key: list(value) for key, value in data.items()})
    frame.to_pickle(path)
    return lambda: _use_frame(pd.read_pickle(path), torch.stack)


def pandas_numpy(path: Path, data: dict[str, Any]) -> Callable[[], float]:
    import pandas as pd

    frame = pd.DataFrame({key: list(np.asarray(value)) for key, value in data.items()})
    frame.to_pickle(path)
    return lambda: _use_frame(pd.read_pickle(path), lambda column: torch.from_numpy(np.stack(column)))


def vidsearch_store(path: Path, data: dict[str, Any]) -> Callable[[], float]:
    database = FeatureDatabase(path)
    database.store("bench_test", {key: np.asarray(value) for key, value in data.items()}, fingerprint="bench")

    def load_and_use() -> float:
        arrays = FeatureDatabase(path).load("bench_test")
        return use(arrays["video_id"], torch.from_numpy(arrays["text_feature"]),
                   torch.from_numpy(arrays["video_feature"]))

    return load_and_use


def _use_dict(tensors: dict[str, Any]) -> float:
    return use(tensors["video_id"], tensors["text_feature"], tensors["video_feature"])


def _use_frame(frame: Any, to_tensor: Callable[[Any], torch.Tensor]) -> float:
    return use(frame["video_id"].to_numpy(), to_tensor(list(frame["text_feature"])),
               to_tensor(list(frame["video_feature"])))


METHODS: dict[str, Callable[[Path, dict[str, Any]], Callable[[], float]]] = {
    "pickle_torch": pickle_torch, "pickle_numpy": pickle_numpy, "pandas_torch": pandas_torch,
    "pandas_numpy": pandas_numpy, "vidsearch_store": vidsearch_store}


def measure_once(method: str, workdir: Path, data: dict[str, Any]) -> dict[str, float]:
    """Save, then load and use from a cold page cache, then again hot, in a fresh directory; seconds of each and the
    bytes on disk. total_s = save + cold load and use."""
    target = Path(tempfile.mkdtemp(dir=workdir, prefix=f"{method}."))
    try:
        started = time.perf_counter()
        load_and_use = METHODS[method](target / "data.pkl" if method != "vidsearch_store" else target, data)
        saved = time.perf_counter()
        drop_page_cache(target)
        cold = time.perf_counter()
        load_and_use()
        done = time.perf_counter()
        load_and_use()
        hot = time.perf_counter() - done
        size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
        return {"save_s": saved - started, "load_use_cold_s": done - cold, "load_use_hot_s": hot,
                "total_s": saved - started + done - cold, "mb": size / 1e6}
    finally:
        shutil.rmtree(target, ignore_errors=True)


def measure(method: str, workdir: Path, data: dict[str, Any], repeats: int) -> dict[str, Any]:
    runs = [measure_once(method, workdir, data) for _ in range(repeats)]
    figures = {key: round(median([run[key] for run in runs]), 4) for key in runs[0]}
    return {"bench": "store", "method": method, "status": "ok", **figures, "repeats": repeats}


def _measure_limited(method: str, workdir: Path, rows: int, queue: Any) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY_LIMIT, CHILD_MEMORY_LIMIT))
    try:
        queue.put(measure(method, workdir, make_features(rows), 1))
    except BaseException as error:  # report what the method does here, whatever it is
        cause = error.__context__ or error.__cause__
        during = f" (during {type(cause).__name__})" if cause else ""
        queue.put({"bench": "store", "method": method, "status": "failed",
                   "error": f"{type(error).__name__}: {error}{during}"})


def measure_in_child(method: str, workdir: Path, rows: int) -> dict[str, Any]:
    """Run one repeat in a forked child with a memory limit and a timeout; report how it ended."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_measure_limited, args=(method, workdir, rows, queue))
    started = time.perf_counter()
    child.start()
    child.join(CHILD_TIMEOUT_S)
    if child.is_alive():
        child.kill()
        child.join()
        return {"bench": "store", "method": method, "status": "failed", "error": f"timeout {CHILD_TIMEOUT_S} s"}
    record = queue.get() if not queue.empty() else {"bench": "store", "method": method, "status": "failed",
                                                    "error": f"child exit code {child.exitcode}"}
    return {**record, "elapsed_s": round(time.perf_counter() - started, 2),
            "memory_limit_gib": CHILD_MEMORY_LIMIT / (1 << 30)}


def run(args: argparse.Namespace) -> None:
    rows, repeats = (1_000, 3) if args.quick else (args.rows, args.repeats)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="vidsearch-bench-store."))
    workdir.mkdir(parents=True, exist_ok=True)
    data = make_features(rows)
    log(f"store bench: {rows} rows, {sum(t.nbytes for t in data.values()) / 1e6:.2f} MB, {repeats} repeats")
    results = {}
    for method in METHODS:
        log(f"  {method}")
        record = measure_in_child(method, workdir, rows) if method == "pandas_torch" else \
            measure(method, workdir, data, repeats)
        emit({**record, "rows": rows})
        results[method] = record
    baseline, ours = results["pandas_numpy"], results["vidsearch_store"]
    summary("store", baseline["total_s"] / ours["total_s"], rows=rows, baseline="pandas_numpy",
            baseline_total_s=baseline["total_s"], vidsearch_total_s=ours["total_s"],
            save_ratio=round(baseline["save_s"] / ours["save_s"], 2),
            load_use_cold_ratio=round(baseline["load_use_cold_s"] / ours["load_use_cold_s"], 2),
            load_use_hot_ratio=round(baseline["load_use_hot_s"] / ours["load_use_hot_s"], 2))
