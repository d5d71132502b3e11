"""Text encoding of one query: the full 77-token context vs stopping at the end-of-text token (ViT-B/32, random weights).

Both paths run alternately on the same query in the same process (inference mode, `--threads`); medians reported.
The ratio is full / truncated. The truncated result equals the full one to float rounding (a test asserts 1e-5).
"""

from __future__ import annotations

import argparse
import time

import torch

from vidsearch.bench.common import emit, median, summary
from vidsearch.config import ModelConfig
from vidsearch.model.videoclip import create_model

QUERY = "a man in a red shirt is playing the guitar on a stage"  # 12 words


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the server uses 1)")


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    model = create_model(ModelConfig(backbone=args.model)).eval()
    tokens = model.tokenize([QUERY])
    paths = {"full": lambda: model.clip.encode_text(tokens), "truncated": lambda: model.encode_text(tokens)}
    times = {name: [] for name in paths}
    with torch.inference_mode():
        for _ in range(3 if args.quick else 5):
            for fn in paths.values():
                fn()
        for _ in range(5 if args.quick else args.repeat):
            for name, fn in paths.items():
                started = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - started) * 1e3)
    for name, values in times.items():
        emit({"bench": "text", "path": name, "tokens": tokens.shape[1] if name == "full" else int(tokens.argmax()) + 1,
              "median_ms": round(median(values), 2), "runs": len(values)})
    full, truncated = median(times["full"]), median(times["truncated"])
    summary("text", full / truncated, full_ms=round(full, 2), truncated_ms=round(truncated, 2), model=args.model,
            threads=args.threads)
