"""Helpers shared by the benchmarks: JSON-lines output, timing, machine description."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    info: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def emit(record: dict[str, Any]) -> None:
    """Print one measurement as a JSON line."""
    print(json.dumps(record, sort_keys=False), flush=True)


def summary(bench: str, ratio: float, **fields: Any) -> None:
    """The last line of every benchmark: its name, its key figures and the ratio against the in-run baseline."""
    emit({"bench": bench, **fields, "ratio": round(ratio, 3), "machine": machine()})


def time_calls(fn: Callable[[], Any], *, repeat: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of `repeat` calls of `fn` after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank on sorted values."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
