"""What the example views cost: an image and a clip encoded seen once and in 9 shifted views.

`vidsearch.store.indexer.encode_image` and `encode_clip` with `views=1` (the baseline, in the same run) and `views=9`
(the default of `vidsearch search` and the site): the ratio is the 9-view clip's median time over the 1-view
clip's. Default model: ViT-B/32 towers with random weights (timing does not depend on the weights), 12 keyframes
at 224², like a real library's; `--model tiny` for the test-sized tower. `--quick`: the tiny model, 3 calls.
"""

from __future__ import annotations

import argparse

import numpy as np

from vidsearch.bench.common import emit, log, median, summary, time_calls

MODELS = {"vit-b-32": "ViT-B-32", "tiny": "vidsearch-tiny"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=sorted(MODELS), default="vit-b-32")
    parser.add_argument("--frames", type=int, default=12, help="keyframes of the example clip")
    parser.add_argument("--repeat", type=int, default=5, help="timed calls of each")


def run(args: argparse.Namespace) -> None:
    import torch

    from vidsearch.config import FrameConfig
    from vidsearch.model.source import ModelSource
    from vidsearch.store.indexer import encode_clip, encode_image

    name, repeat = ("tiny", 3) if args.quick else (args.model, args.repeat)
    model = ModelSource(backbone=MODELS[name], num_frames=args.frames).load().eval()
    size = int(model.image_size)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (args.frames, size, size, 3), dtype=np.uint8)
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    settings = FrameConfig(size=size)
    medians = {}
    with torch.inference_mode():
        for kind, call in (("clip", lambda views: encode_clip(model, frames, views=views)),
                           ("image", lambda views: encode_image(model, image, settings, views=views))):
            for views in (1, 9):
                seconds = median(time_calls(lambda: call(views), repeat=repeat))
                medians[f"{kind}/{views}"] = seconds
                emit({"bench": "views", "model": name, "example": kind, "views": views, "frames": args.frames,
                      "median_s": round(seconds, 6), "threads": torch.get_num_threads()})
    log(f"views: a clip {medians['clip/1']:.3f} s seen once, {medians['clip/9']:.3f} s in 9 views")
    summary("views", medians["clip/9"] / medians["clip/1"], model=name, frames=args.frames,
            median_s={key: round(value, 6) for key, value in medians.items()})
