"""The `vidsearch` command: a flat table of subcommands.

Each subcommand is one entry in COMMANDS: a help line, a function that adds its arguments, and a function that turns
the parsed arguments into config objects and calls the library. No library logic lives here.
"""

from __future__ import annotations

import argparse
import errno
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from vidsearch import __version__
from vidsearch.distributed import env_rank

if TYPE_CHECKING:
    from vidsearch.store.indexer import IndexReport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


TRAINING_MODULES = ("torch", "torchvision", "open_clip")  # the `vidsearch[train]` extra


class UserError(Exception):
    """A problem with the user's input: printed without a traceback, exit status 2."""


# --- subcommands -----------------------------------------------------------------------------------------------------


def _convert_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="weights file or directory: OpenAI .pt (TorchScript), open_clip .pt/.bin/.safetensors, "
                        "or a Hugging Face CLIP directory")
    parser.add_argument("--out", required=True, help="where to write the .safetensors file (open_clip parameter names)")


def _convert_run(args: argparse.Namespace) -> int:
    from vidsearch.model.backbone import convert_to_safetensors
    from vidsearch.model.weights import WeightsError

    try:
        out = convert_to_safetensors(args.source, args.out)
    except (WeightsError, OSError) as error:
        raise UserError(str(error)) from None
    print(f"wrote {out}")
    return 0


def _synth_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="directory for videos/*.mp4 and manifest.jsonl")
    parser.add_argument("--videos", type=int, default=300, help="number of videos, an even number: twin pairs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=96, help="frame width and height in pixels (even)")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each clip")
    parser.add_argument("--fps", type=float, default=4.0, help="frames per second of the written videos")


def _synth_run(args: argparse.Namespace) -> int:
    from vidsearch.data.synthetic import generate_library

    try:
        manifest = generate_library(args.out, videos=args.videos, seed=args.seed, size=args.size,
                                    seconds=args.seconds, fps=args.fps)
    except ValueError as error:
        raise UserError(str(error)) from None
    print(f"wrote {manifest}")
    return 0


def _import_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=["msrvtt", "msvd", "csv", "jsonl"],
                        help="msrvtt/msvd: PATH is the annotation directory as CLIP4Clip distributes it; "
                             "csv/jsonl: PATH is a file of video,caption[,split,category] rows")
    parser.add_argument("path", help="annotation directory (msrvtt, msvd) or caption file (csv, jsonl)")
    parser.add_argument("--out", required=True, help="manifest to write (JSON Lines)")
    parser.add_argument("--videos", help="directory of the video files (msrvtt: default PATH/MSRVTT_Videos, "
                                         "msvd: default PATH/MSVD_Videos)")
    parser.add_argument("--val-videos", type=int, default=0,
                        help="msrvtt: move this many training videos into a validation split")
    parser.add_argument("--split", default="train", choices=["train", "val", "test"],
                        help="csv/jsonl: split of rows that name none")


def _import_run(args: argparse.Namespace) -> int:
    from vidsearch.data.manifest import ManifestError, save_manifest

    try:
        records = _import_records(args)
    except (ManifestError, OSError) as error:
        raise UserError(str(error)) from None
    print(f"wrote {_count(len(records), 'video')} to {save_manifest(records, args.out)}")
    return 0


def _import_records(args: argparse.Namespace) -> list:
    from vidsearch.data.manifest import import_captions
    from vidsearch.data.msrvtt import convert_msrvtt
    from vidsearch.data.msvd import convert_msvd

    root, manifest_dir = Path(args.path), Path(args.out).parent
    if args.format == "msrvtt":
        return convert_msrvtt(data_json=root / "MSRVTT_data.json", train_csv=root / "MSRVTT_train.9k.csv",
                              test_csv=root / "MSRVTT_JSFUSION_test.csv", manifest_dir=manifest_dir,
                              videos_dir=args.videos or root / "MSRVTT_Videos", val_videos=args.val_videos)
    if args.format == "msvd":
        return convert_msvd(data_dir=root, videos_dir=args.videos or root / "MSVD_Videos", manifest_dir=manifest_dir)
    return import_captions(root, manifest_dir=manifest_dir, default_split=args.split, kind=args.format)


def _frames_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="VIDEO_OR_DIR", help="video files, or directories searched for them")
    parser.add_argument("--out", required=True, help="cache directory (created, or resumed if it exists)")
    parser.add_argument("--sampler", choices=["uniform", "maxdiff"], default="uniform",
                        help="uniform: first frame of every second; maxdiff: frames that differ most from the previous")
    parser.add_argument("--frames", type=int, default=12,
                        help="up to this many keyframes per video (per moment with moments); fewer when the video "
                             "(moment) has fewer candidates, e.g. a 5 s video at --fps 1 gives 5")
    parser.add_argument("--size", type=int, default=224, help="side of the square JPEG keyframes")
    parser.add_argument("--fps", type=float, default=1.0, help="uniform: candidate frames per second")
    parser.add_argument("--keyframes-only", action="store_true",
                        help="uniform: candidates are the intra frames only, each decoded alone (much faster; their "
                             "times are kept exact, but a video may have a few seconds between them)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality, 1-100")
    moments = parser.add_mutually_exclusive_group()
    moments.add_argument("--segment-seconds", type=float, metavar="S", help="moments: fixed windows of S seconds")
    moments.add_argument("--scenes", action="store_true", help="moments: shots, cut where the picture changes")
    parser.add_argument("--workers", type=int, help="videos decoded in parallel (default: one per CPU core)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one video may take before it fails")


def _frames_run(args: argparse.Namespace) -> int:
    from vidsearch.config import FrameConfig
    from vidsearch.video.cache import CacheFormatError, build_cache
    from vidsearch.video.decode import DecodeLimits

    if args.keyframes_only and args.sampler != "uniform":
        raise UserError("--keyframes-only goes with the uniform sampler")
    config = FrameConfig(sampler=args.sampler, frames=args.frames, size=args.size, fps=args.fps,
                         jpeg_quality=args.quality, segment_seconds=args.segment_seconds, scenes=args.scenes,
                         keyframes_only=args.keyframes_only)
    if not _frames_inputs_have_videos(args.inputs):
        return 1
    try:
        report = build_cache(args.inputs, args.out, config, workers=args.workers,
                             limits=DecodeLimits(timeout_s=args.timeout))
    except (CacheFormatError, FileNotFoundError, ValueError) as error:
        raise UserError(str(error)) from None
    except OSError as error:
        return _disk_full(error, "frames")
    print(report.summary())
    return 1 if report.failures else 0


def _disk_full(error: OSError, command: str) -> int:
    """No space left: one line and exit status 1 (what the command had finished is kept); other errors go on."""
    if error.errno not in (errno.ENOSPC, errno.EDQUOT):
        raise error
    print(f"vidsearch {command}: error: {error.strerror or error}: free some space, then run it again",
          file=sys.stderr)
    return 1


def _frames_inputs_have_videos(inputs: list[str]) -> bool:
    """Checked before the cache is created: a missing input is an error, inputs without any video a warning."""
    from vidsearch.video.cache import VIDEO_SUFFIXES, find_videos

    try:
        found = find_videos(inputs)
    except FileNotFoundError as error:
        raise UserError(f"{error}; nothing was created") from None
    if not found:
        print(f"vidsearch frames: warning: no video files in {', '.join(inputs)} (looked for "
              f"{' '.join(sorted(VIDEO_SUFFIXES))}); nothing was created", file=sys.stderr)
    return bool(found)


def _train_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="data manifest (JSON Lines)")
    parser.add_argument("--frames", required=True, help="keyframe cache directory (vidsearch frames)")
    parser.add_argument("--out", required=True, help="run directory: checkpoints, state, log, packed frames")
    parser.add_argument("--mode", choices=["full", "aim", "aim+text"], default="full",
                        help="full: CLIP4Clip fine-tuning; aim: adapters + temporal embedding + ln_post; aim+text: "
                             "and the text tower")
    parser.add_argument("--head", choices=["meanP", "seqTransf", "seqLSTM"],
                        help="temporal head (default: the --init checkpoint's, else meanP)")
    parser.add_argument("--model", default="ViT-B-32", help="open_clip architecture of the base CLIP")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--weights", help="base CLIP weights: a file or Hugging Face directory")
    weights.add_argument("--pretrained", help="base CLIP weights: an open_clip pretrained tag")
    weights.add_argument("--init", metavar="CHECKPOINT", help="start from an earlier vidsearch checkpoint")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32, help="global batch (split over torchrun ranks)")
    parser.add_argument("--lr", type=float, default=1e-4, help="learning rate of new modules (adapters, head)")
    parser.add_argument("--coef-lr", type=float, default=1e-3, help="pretrained CLIP parameters learn at lr × this")
    parser.add_argument("--weight-decay", type=float, default=0.2)
    parser.add_argument("--warmup", type=float, default=0.1, help="fraction of all steps spent warming up")
    parser.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm (0: no clipping)")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"], default="auto",
                        help="autocast precision; auto: bf16 on a GPU, fp32 on a CPU")
    parser.add_argument("--frames-per-video", type=int, help="T (default: the --init checkpoint's, else 12)")
    parser.add_argument("--max-words", type=int, default=77, help="caption tokens kept, end-of-text included")
    parser.add_argument("--val-split", choices=["val", "test", "none"], default="val",
                        help="split that picks the best checkpoint; test or none only when asked for")
    parser.add_argument("--adapters", action="store_true",
                        help="add AIM adapters in any mode (the aim modes always have them): with --mode full they "
                             "train together with everything else")
    parser.add_argument("--twins-in-batch", action="store_true", help="time-reversed twins share a batch")
    parser.add_argument("--example-weight", type=float, default=0.0, metavar="W",
                        help="weight of the search-by-example term: video↔video and still frame (T = 1)↔video "
                             "similarities learn to follow the captions' (what image and clip queries need; "
                             "default 0: off; the demo model used 1, 2, then 4)")
    parser.add_argument("--example-scale", type=float, default=30.0, metavar="S",
                        help="similarity scale of that term (default 30; lower spreads each caption's target over "
                             "more of the captions that share something with it)")
    parser.add_argument("--example-motion", type=float, default=1.0, metavar="M",
                        help="how much direction in time counts in that term's targets, 0 to 1 (default 1: each "
                             "caption as it is; lower: a footage's captions are also averaged with its time-reversed "
                             "twin's, so videos that show the same thing moving another way count as alike; needs "
                             "--twins-in-batch to have any effect)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="loader processes (0: in the training process)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the forward pass")
    parser.add_argument("--grad-checkpointing", action="store_true", help="trade compute for memory")
    parser.add_argument("--log-every", type=int, default=10, help="steps between log lines")
    parser.add_argument("--steps", type=int, help="stop after this global step (state saved; --resume continues)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")


def _train_request(args: argparse.Namespace):
    import dataclasses

    from vidsearch.config import AdapterConfig, ModelConfig, TrainConfig, from_dict
    from vidsearch.model.checkpoint import read_checkpoint_config
    from vidsearch.train.run import RunRequest

    base = from_dict(ModelConfig, read_checkpoint_config(args.init)["model"]) if args.init else ModelConfig(args.model)
    model = dataclasses.replace(base, head=args.head or base.head, precision="fp32",
                                num_frames=args.frames_per_video or base.num_frames)
    if args.adapters and model.adapters is None:
        model = dataclasses.replace(model, adapters=AdapterConfig())
    train = TrainConfig(mode=args.mode, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        coef_lr=args.coef_lr, weight_decay=args.weight_decay, warmup=args.warmup,
                        grad_clip=args.grad_clip, precision=args.precision, seed=args.seed, max_words=args.max_words,
                        workers=args.workers, val_split=args.val_split, twins_in_batch=args.twins_in_batch,
                        example_weight=_non_negative(args.example_weight, "--example-weight"),
                        example_scale=_positive(args.example_scale, "--example-scale"),
                        example_motion=_fraction(args.example_motion, "--example-motion"),
                        compile=args.compile, grad_checkpointing=args.grad_checkpointing, log_every=args.log_every)
    return RunRequest(data=args.data, frames=args.frames, model=model, train=train, weights=args.weights,
                      pretrained=args.pretrained, init=args.init)


def _non_negative(value: float, option: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise UserError(f"{option} {value}: must be a number ≥ 0")
    return value


def _fraction(value: float, option: str) -> float:
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise UserError(f"{option} {value}: must be a number from 0 to 1")
    return value


def _positive(value: float, option: str) -> float:
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"{option} {value}: must be a number > 0")
    return value


def _train_run(args: argparse.Namespace) -> int:
    from vidsearch.data.manifest import ManifestError
    from vidsearch.model.weights import WeightsError
    from vidsearch.train.run import run_training
    from vidsearch.video.cache import CacheFormatError

    try:
        result = run_training(_train_request(args), args.out, resume=args.resume, max_steps=args.steps)
    except (ValueError, ManifestError, WeightsError, CacheFormatError, FileNotFoundError) as error:
        raise UserError(str(error)) from None
    if env_rank() != 0:
        return 0
    best = f", best {result.best} (epoch {result.progress.best_epoch}, R@1 {result.progress.best_r1:.1f})" \
        if result.best else ""
    print(f"trained {result.progress.step} steps in {result.seconds:.0f} s: last {result.last}{best}")
    return 0


def _evaluate_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="vidsearch checkpoint directory")
    parser.add_argument("--data", required=True, help="data manifest (JSON Lines)")
    parser.add_argument("--frames", required=True, help="keyframe cache directory")
    parser.add_argument("--split", choices=["train", "val", "test"], default="test", help="split to evaluate")
    parser.add_argument("--dsl", action="store_true", help="also report dual-softmax re-scored results")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--workers", type=int, default=2, help="JPEG decoding processes")


def _evaluate_run(args: argparse.Namespace) -> int:
    import json

    from vidsearch.data.manifest import ManifestError
    from vidsearch.eval.evaluate import evaluate_checkpoint
    from vidsearch.model.weights import WeightsError
    from vidsearch.video.cache import CacheFormatError

    _check_checkpoint_exists(args.checkpoint)
    try:
        evaluation = evaluate_checkpoint(args.checkpoint, manifest=args.data, frames=args.frames, split=args.split,
                                         workers=args.workers)
    except (ValueError, ManifestError, WeightsError, CacheFormatError, FileNotFoundError) as error:
        raise UserError(str(error)) from None
    if args.json:
        result = evaluation.as_dict()
        print(json.dumps(result if args.dsl else {k: v for k, v in result.items() if k != "dsl"}, indent=2))
    else:
        print(evaluation.table(label=args.checkpoint, dsl=args.dsl))
    return 0


def _check_checkpoint_exists(checkpoint: str) -> None:
    """A missing checkpoint, and when it sits in a training run directory, why the run has not written it."""
    import json

    path = Path(checkpoint)
    if (path / "config.json").is_file():
        return
    missing = "does not exist" if not path.exists() else "is not a vidsearch checkpoint (no config.json)"
    run = path.parent
    if not (run / "run.json").is_file():
        raise UserError(f"{path} {missing}; a checkpoint is a directory that `vidsearch train` writes (RUN/best, "
                        "RUN/epoch-K)")
    try:
        step = json.loads((run / "state" / "trainer.json").read_text())["progress"]["step"]
        val_split = json.loads((run / "run.json").read_text())["train"]["val_split"]
    except (OSError, ValueError, KeyError, TypeError):
        step = val_split = None
    if path.name == "best" and val_split == "none":
        why = "the run validates on no split (--val-split none), so it never writes best/"
    elif step is None:
        why = "the run has not saved a training state yet"
    elif path.name == "best":
        why = f"training stopped at step {step}, before its first validation (validation runs at the end of an epoch)"
    else:
        why = f"training stopped at step {step}"
    others = sorted(p.name for p in run.iterdir() if (p / "config.json").is_file())
    raise UserError(f"{path} {missing}: {why}"
                    + (f"; checkpoints in {run}: {', '.join(others)}" if others else "")
                    + f"; continue the run with `vidsearch train ... --out {run} --resume`")


def _add_model_source_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model (one of)")
    group.add_argument("--checkpoint", help="a vidsearch checkpoint directory (from `vidsearch train`)")
    group.add_argument("--weights", help="CLIP weights: OpenAI .pt, open_clip .safetensors/.pt, or a Hugging Face "
                                         "CLIP directory (see `vidsearch convert --help`)")
    group.add_argument("--pretrained", help="an open_clip pretrained tag, e.g. openai (downloaded by open_clip; "
                                            "needs internet the first time)")
    group.add_argument("--model", default="ViT-B-32", help="an exported model directory (`vidsearch export`: runs on "
                       "ONNX Runtime, no PyTorch needed), or the architecture for --weights/--pretrained (default "
                       "ViT-B-32)")
    group.add_argument("--random-weights", action="store_true",
                       help="random weights (for trying the pipeline out only: search results are meaningless)")


def _model_source(args: argparse.Namespace) -> "ModelSource":
    from vidsearch.model.source import ModelSource

    exported = _exported_dir(args.model)
    try:
        source = ModelSource(checkpoint=args.checkpoint, weights=args.weights, pretrained=args.pretrained,
                             exported=exported, backbone=ModelSource.backbone if exported else args.model)
    except ValueError as error:
        raise UserError(str(error)) from None
    if not source.has_weights and not args.random_weights:
        raise UserError("no model given. Pass --checkpoint RUN/best (from `vidsearch train`), or CLIP weights with "
                        "--weights FILE_OR_DIR (OpenAI ViT-B-32.pt, an open_clip .safetensors, or a Hugging Face "
                        "CLIP directory such as openai/clip-vit-base-patch32 downloaded with its config.json), or "
                        "--pretrained openai when online")
    return source


def _exported_dir(value: str | None) -> str | None:
    """`--model VALUE` names an exported model when VALUE is a directory (checked here: one line if it is not one)."""
    from pathlib import Path

    from vidsearch.runtime.exported import ExportedModelError, read_exported_config

    if value is None or not Path(value).is_dir():
        return None
    try:
        read_exported_config(value)
    except ExportedModelError as error:
        raise UserError(str(error)) from None
    return value


def _add_exported_model_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="DIR", help="an exported model directory (`vidsearch export`) to encode "
                        "queries with instead of the store's own model; refused unless it gives the store's vectors")


def _index_args(parser: argparse.ArgumentParser) -> None:
    _add_model_source_args(parser)
    parser.add_argument("--frames", required=True, help="keyframe cache directory (from `vidsearch frames`)")
    parser.add_argument("--store", required=True, help="feature store directory (created if absent)")
    parser.add_argument("--data", help="data manifest (JSONL) with captions and categories for text match and filters")
    parser.add_argument("--rebuild", action="store_true", help="start the store afresh instead of adding new videos")
    parser.add_argument("--batch-size", type=int, default=16, help="videos (or moments) encoded at once")
    parser.add_argument("--device", help="cuda or cpu (default: cuda when a GPU is available; an exported model runs "
                                          "on the CPU); under torchrun, cuda means each rank's local GPU")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None,
                        help="default: bf16 on a GPU, fp32 on the CPU")


def _cuda() -> bool:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def _index_run(args: argparse.Namespace) -> int:
    from vidsearch.data.manifest import ManifestError, load_manifest
    from vidsearch.distributed import env_world
    from vidsearch.store.indexer import index_cache, index_cache_sharded
    from vidsearch.store.store import StoreError
    from vidsearch.web.setup import CaptionLoadError, load_caption_database

    source = _model_source(args)
    if source.exported is None:
        args.device = args.device or ("cuda" if _cuda() else "cpu")
    elif args.device not in (None, "cpu") or args.precision not in (None, "fp32"):
        raise UserError("an exported model runs on the CPU in its own precision: drop --device/--precision")
    args.device = args.device or "cpu"
    precision = args.precision or ("bf16" if args.device.startswith("cuda") else "fp32")
    index = index_cache_sharded if env_world() > 1 else index_cache  # under torchrun: the ranks share the videos
    try:
        records = load_manifest(args.data) if args.data else []
        model = source.load(precision=precision)
        report = index(model=model, source=source, cache_dir=args.frames, store_dir=args.store, records=records,
                       rebuild=args.rebuild, batch_size=args.batch_size, device=args.device)
        if env_rank() != 0:
            return 0
        captions = load_caption_database(store_dir=args.store, manifest=args.data) if args.data else None
    except (ManifestError, StoreError, FileNotFoundError, ValueError, CaptionLoadError) as error:  # WeightsError too
        raise UserError(str(error)) from None
    except OSError as error:
        return _disk_full(error, "index")
    for warning in report.warnings:
        print(f"vidsearch index: warning: {warning}", file=sys.stderr)
    print(_index_summary(report))
    if captions:
        print(captions)
    return 0


def _index_summary(report: "IndexReport") -> str:
    rest = (f"{_count(report.videos_skipped, 'video')} already in the store, "
            f"{report.videos_failed_in_cache} failed in the cache")
    if report.duplicates:
        pairs = ", ".join(f"{copy} = {original}" for copy, original in sorted(report.duplicates.items())[:3])
        pairs += ", ..." if len(report.duplicates) > 3 else ""
        rest += f", {_count(len(report.duplicates), 'duplicate')} skipped ({pairs})"
    if report.version is None:
        return f"nothing new to index: {rest}; the store is unchanged ({report.seconds:.1f} s)"
    if report.videos_added == 0:
        return (f"nothing new to index: {rest}; their captions and categories updated, store version "
                f"{report.version} ({report.seconds:.1f} s)")
    return (f"indexed {_count(report.videos_added, 'video')} ({_count(report.rows_added, 'row')}), {rest}; "
            f"store version {report.version} in {report.seconds:.1f} s")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")
def _ingest_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="VIDEO_OR_DIR", help="video files, or directories searched for them")
    parser.add_argument("--store", required=True, help="feature store directory (created if absent)")
    _add_model_source_args(parser)
    parser.add_argument("--frames", help="keyframe cache directory (default: the store's, else STORE-frames)")
    parser.add_argument("--ray", metavar="ADDRESS", help="run on a Ray cluster: its address, or auto (the cluster of "
                                                        "this machine, else a local one); needs vidsearch[cluster]. "
                                                        "The cache and the store stay on this machine; the other "
                                                        "nodes read the videos (and the model) at the same paths")
    parser.add_argument("--batch-videos", type=int, default=64, help="videos per published store version")
    parser.add_argument("--batch-size", type=int, default=16, help="videos (or moments) encoded at once")
    parser.add_argument("--keyframes", type=int, help="keyframes per video of a new cache (default 12)")
    parser.add_argument("--size", type=int, help="side of the square keyframes of a new cache (default 224)")
    parser.add_argument("--workers", type=int, help="without --ray: videos decoded at once (default: one per core)")
    parser.add_argument("--encoders", type=int, help="with --ray: encoder actors (default: one per GPU, else 1)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one video may take before it fails")
    parser.add_argument("--device", help="without --ray: where the model runs (default: cuda when available, else cpu)")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")


def _ingest_run(args: argparse.Namespace) -> int:
    from vidsearch.ingest.job import RayMissing, default_cache, frame_config, ingest
    from vidsearch.model.weights import WeightsError
    from vidsearch.store.store import StoreError
    from vidsearch.video.cache import CacheFormatError
    from vidsearch.video.decode import DecodeLimits

    source = _model_source(args)
    args.device = args.device or ("cuda" if source.exported is None and _cuda() else "cpu")
    try:
        cache = args.frames or default_cache(args.store)
        report = ingest(args.inputs, store_dir=args.store, cache_dir=cache, source=source,
                        config=frame_config(cache, frames=args.keyframes, size=args.size), ray_address=args.ray,
                        batch_videos=args.batch_videos, workers=args.workers,
                        limits=DecodeLimits(timeout_s=args.timeout), device=args.device, precision=args.precision,
                        batch_size=args.batch_size, encoders=args.encoders)
    except (RayMissing, CacheFormatError, WeightsError, StoreError, FileNotFoundError, ValueError) as error:
        raise UserError(str(error)) from None
    except OSError as error:
        return _disk_full(error, "ingest")
    print(report.summary())
    return 1 if report.failed or report.unreadable else 0


def _search_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", nargs="?", help="a sentence describing what to find (or --image, --clip)")
    parser.add_argument("--image", metavar="PATH",
                        help="search by an example image instead of a sentence (any format Pillow reads; encoded as a "
                             "one-frame video; vector mode)")
    parser.add_argument("--clip", metavar="PATH",
                        help="search by an example video clip instead of a sentence (MP4, MOV, MKV, WebM, AVI or "
                             "MPEG-TS; at most 50 MB and 120 s; keyframes sampled as the library's, decoded in a child "
                             "process, encoded by the video tower; vector mode)")
    parser.add_argument("--views", type=int, choices=[1, 9], default=9,
                        help="how an --image or --clip is seen: 9 views shifted by a third of the model's patch "
                             "(default; steadier for small objects, 9 passes of the tower) or 1 (as it is)")
    parser.add_argument("--store", required=True, help="feature store directory (from `vidsearch index`)")
    parser.add_argument("-k", type=int, default=10, help="number of videos to return")
    parser.add_argument("--mode", choices=["vector", "text", "hybrid"], default="vector",
                        help="vector: CLIP similarity; text: caption substring match; hybrid: both, fused")
    parser.add_argument("--threshold", type=float, help="minimum cosine similarity of a moment")
    parser.add_argument("--min-confidence", type=float,
                        help="minimum confidence of a moment, 0 to 1 (0.5: possible match or better, 0.8: good match)")
    parser.add_argument("--category", help="only videos of this category")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_exported_model_arg(parser)


def _search_run(args: argparse.Namespace) -> int:
    import json

    from vidsearch.runtime.exported import ExportedModelError
    from vidsearch.store.indexer import open_searcher
    from vidsearch.store.search import SearchOptions
    from vidsearch.store.store import StoreError

    if [args.query, args.image, args.clip].count(None) != 2:
        raise UserError("give a query sentence, --image PATH or --clip PATH (one of them)")
    if (args.query is not None and not args.query.strip()) or args.k < 1:
        raise UserError("the query must not be empty and -k must be at least 1")
    if args.min_confidence is not None and not 0 <= args.min_confidence <= 1:
        raise UserError("--min-confidence must be between 0 and 1")
    image = _read_image_arg(args.image) if args.image is not None else None
    clip = _read_clip_arg(args.clip) if args.clip is not None else None
    model = _exported_model_arg(args.model)
    options = SearchOptions(k=args.k, mode=args.mode, threshold=args.threshold, category=args.category,
                            min_confidence=args.min_confidence)
    try:
        searcher = open_searcher(args.store, model=model)
        if image is not None:
            from vidsearch.store.indexer import encode_image
            from vidsearch.video.clips import query_frame_config

            encoder = getattr(searcher.encoder, "model", searcher.encoder)
            started = time.perf_counter()
            vector = encode_image(encoder, image, query_frame_config(encoder, searcher.store.info.get("frames")),
                                  views=args.views)
            encode_ms = (time.perf_counter() - started) * 1e3
            result = searcher.search_example(vector, options, query=f"image {Path(args.image).name}")
            result.count_stages(encode=encode_ms)
        elif clip is not None:
            vector, stages = _encode_clip_arg(args.clip, clip, searcher, views=args.views)
            result = searcher.search_example(vector, options, query=f"clip {Path(args.clip).name}")
            result.count_stages(**stages)
        else:
            result = searcher.search(args.query, options)
    except (StoreError, ExportedModelError, ValueError) as error:
        raise UserError(str(error)) from None
    print(json.dumps(result.to_dict(), indent=2) if args.json else _format_hits(result))
    return 0


def _read_image_arg(path: str):
    """--image PATH → RGB pixels, or a one-line UserError (missing, too large, not an image)."""
    from vidsearch.video.stills import MAX_IMAGE_BYTES, ImageRejected, decode_image

    try:
        size = Path(path).stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise UserError(f"--image {path}: {size} bytes, the limit is {MAX_IMAGE_BYTES}")
        return decode_image(Path(path).read_bytes())
    except OSError as error:
        raise UserError(f"--image {path}: {error.strerror or error}") from None
    except ImageRejected as error:
        raise UserError(f"--image {path}: {error}") from None


def _read_clip_arg(path: str) -> bytes:
    """--clip PATH → its bytes, or a one-line UserError (missing, not a regular file, too large: before reading)."""
    from vidsearch.video.clips import MAX_CLIP_BYTES, ClipRejected, read_clip

    try:
        return read_clip(path, max_bytes=MAX_CLIP_BYTES)
    except ClipRejected as error:
        raise UserError(f"--clip {path}: {error}") from None


def _encode_clip_arg(path: str, data: bytes, searcher, *, views: int):
    """The clip's vector (its keyframes sampled as the store's library's were, decoded in a child process) and the
    milliseconds its decode and encode took."""
    from vidsearch.store.indexer import encode_clip
    from vidsearch.video.clips import ClipRejected, decode_clip, query_frame_config

    model = getattr(searcher.encoder, "model", searcher.encoder)
    started = time.perf_counter()
    try:
        clip = decode_clip(data, query_frame_config(model, searcher.store.info.get("frames")))
    except ClipRejected as error:
        raise UserError(f"--clip {path}: {error}") from None
    decoded = time.perf_counter()
    vector = encode_clip(model, clip.frames, views=views)
    return vector, {"decode": (decoded - started) * 1e3, "encode": (time.perf_counter() - decoded) * 1e3}


def _exported_model_arg(value: str | None) -> str | None:
    if value is not None and _exported_dir(value) is None:
        raise UserError(f"--model {value}: no such directory (an exported model from `vidsearch export`)")
    return value


def _serve_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True, help="feature store directory (from `vidsearch index`)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=4, help="requests served at once")
    parser.add_argument("--behind-https-proxy", action="store_true",
                        help="the site is reached over HTTPS through a proxy on 127.0.0.1 that sets X-Forwarded-Proto: "
                             "secure cookies, HSTS, redirects to https")
    _add_exported_model_arg(parser)


def _serve_run(args: argparse.Namespace) -> int:
    from vidsearch.runtime.exported import ExportedModelError
    from vidsearch.store.store import StoreError
    from vidsearch.web.library.engine import LibraryUnavailable
    from vidsearch.web.server import serve

    _check_port_free(args.host, args.port)
    _check_store_exists(args.store)
    model = _exported_model_arg(args.model)
    try:
        serve(store_dir=args.store, host=args.host, port=args.port, threads=args.threads,
              https=args.behind_https_proxy, model=model)
    except (LibraryUnavailable, StoreError, ExportedModelError) as error:
        raise UserError(str(error)) from None
    except OSError as error:
        if not _is_listen_error(error):
            raise
        raise _listen_error(args.host, args.port, error) from None
    return 0


def _check_store_exists(store: str) -> None:
    """Before anything is created under it: `serve` needs a store that `vidsearch index` made."""
    from vidsearch.store.store import StoreError, read_manifest

    try:
        read_manifest(Path(store))
    except StoreError as error:
        raise UserError(f"{error}. Make one with `vidsearch frames VIDEOS --out CACHE` then `vidsearch index "
                        f"--frames CACHE --store {store} --checkpoint RUN/best` (or --weights / --pretrained)"
                        ) from None


def _check_port_free(host: str, port: int) -> None:
    """Bind the port the way the server will (address reuse on) and let it go: a busy port is said before any work."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise UserError(f"cannot listen on {host}: {error.strerror}; pass an address with --host") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise _listen_error(host, port, error) from None


def _is_listen_error(error: OSError) -> bool:
    import errno

    return error.errno in {errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES}


def _listen_error(host: str, port: int, error: OSError) -> UserError:
    import errno

    if error.errno == errno.EADDRINUSE:
        return UserError(f"port {port} on {host} is in use (another vidsearch serve or demo?); stop it or pick "
                         f"another port with --port, e.g. --port {port + 1}")
    return UserError(f"cannot listen on {host}:{port}: {error.strerror or error}")


def _format_hits(result) -> str:
    """The text the terminal shows: caption matches in text mode; in hybrid mode the fused score that orders the
    hits comes first and the best moment's cosine beside it."""
    took_ms = sum(result.timings_ms.values())
    if result.mode == "text":
        lines = [f"{_count(len(result.text_matches), 'video')} for {result.query!r} (caption text, {took_ms:.1f} ms)"]
        for rank, match in enumerate(result.text_matches, 1):
            lines.append(f"{rank:3d}. {match.video_id}" + (f"  [{match.category}]" if match.category else "")
                         + f"  {_count(len(match.captions), 'caption')}: {match.captions[0]!r}")
        return "\n".join(lines)
    fused = result.mode == "hybrid" and any(hit.fused_score is not None for hit in result.hits)
    lines = [f"{_count(len(result.hits), 'video')} for {result.query!r} ({result.index}, {took_ms:.1f} ms)"
             + ("; fused rank score, then cosine" if fused else "")]
    if any(getattr(hit, "confidence_label", None) for hit in result.hits) and not result.confident:
        lines.append("no confident match: the library may not hold it; the nearest videos are shown")
    for rank, hit in enumerate(result.hits, 1):
        moment = hit.moments[0] if hit.moments else None
        span = f" {moment.start:.1f}–{moment.end:.1f} s" if moment and moment.start is not None else ""
        score = f"{hit.score:.3f}" if hit.score is not None else "  -  "
        if fused:
            score = f"{hit.fused_score:.4f}  cos {score}"
        marks = (f"  [{hit.category}]" if hit.category else "") + ("  caption match" if hit.text_match else "")
        confidence = f"  {hit.confidence_label} confidence" if hit.confidence_label else ""
        lines.append(f"{rank:3d}. {score}  {hit.video_id}{span}{marks}{confidence}")
    return "\n".join(lines)


def _export_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="CHECKPOINT_OR_WEIGHTS", help="a vidsearch checkpoint directory, or CLIP "
                        "weights (a file or Hugging Face directory, as for `vidsearch index --weights`)")
    parser.add_argument("--out", required=True, help="the exported model directory to create (must not exist)")
    parser.add_argument("--int8", action="store_true", help="int8 weights (ONNX Runtime dynamic quantisation): "
                        "smaller and faster on CPUs, vectors close to fp32 but a fingerprint of their own, so a store "
                        "indexed with it is searched with it")
    parser.add_argument("--model", default="ViT-B-32", help="architecture of plain CLIP weights (default ViT-B-32)")


def _export_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vidsearch.model.checkpoint import CONFIG_FILE
    from vidsearch.model.export import ExportError, export_model
    from vidsearch.model.source import ModelSource
    from vidsearch.model.weights import WeightsError

    is_checkpoint = (Path(args.source) / CONFIG_FILE).is_file() and (Path(args.source) / "model.safetensors").is_file()
    source = ModelSource(checkpoint=args.source) if is_checkpoint else ModelSource(weights=args.source,
                                                                                   backbone=args.model)
    try:
        out = export_model(source.load(), args.out, int8=args.int8)
    except (ExportError, WeightsError, FileNotFoundError, ValueError) as error:
        raise UserError(str(error)) from None
    print(f"wrote {out}: use it with `vidsearch index|search|serve --model {out}`")
    return 0


def _demo_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default="demo-work", help="where the demo library, cache and store live "
                                                               "(reused by the next run)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--videos", type=int, default=300, help="size of the demo library (twin pairs: even)")
    parser.add_argument("--retrain", action="store_true",
                        help="train the tiny model from scratch (CLIP4Clip stage, then AIM adapters, then AIM with "
                             "the text tower, the last stage on a larger library) instead of using the shipped "
                             "checkpoint; about an hour on 2 CPU cores (a rerun skips the finished stages)")
    parser.add_argument("--no-serve", action="store_true", help="prepare everything, then exit")


def _demo_run(args: argparse.Namespace) -> int:
    from vidsearch.demo import EXAMPLE_QUERIES, prepare_demo
    from vidsearch.web.server import serve

    if not args.no_serve:
        _check_port_free(args.host, args.port)
    report = prepare_demo(workdir=args.workdir, retrain=args.retrain, videos=args.videos)
    stages = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in report.seconds.items())
    print(f"demo ready ({stages}); checkpoint {report.checkpoint}")
    if args.no_serve:
        return 0
    print(f"\nserving the demo library on http://{args.host}:{args.port}/  (Ctrl-C stops)\ntry:")
    for query in EXAMPLE_QUERIES:
        print(f"  {query}")
    try:
        serve(store_dir=report.paths.store, host=args.host, port=args.port)
    except OSError as error:  # the port was taken while the demo was being prepared
        if not _is_listen_error(error):
            raise
        raise _listen_error(args.host, args.port, error) from None
    return 0


COMMANDS: dict[str, Command] = {
    "train": Command("fine-tune CLIP on captioned videos: CLIP4Clip (full) or AIM adapters, from the keyframe cache",
                     _train_args, _train_run),
    "evaluate": Command("text→video and video→text R@1/5/10, MdR, MnR of a checkpoint on one split",
                        _evaluate_args, _evaluate_run),
    "convert": Command("convert CLIP weights in any supported format to safetensors, without executing code",
                       _convert_args, _convert_run),
    "frames": Command("extract keyframes of videos into a cache of square JPEGs with a manifest",
                      _frames_args, _frames_run),
    "index": Command("encode a keyframe cache with CLIP (or a checkpoint) into a feature store", _index_args,
                     _index_run),
    "ingest": Command("video files → keyframes → features → the feature store in one job, here or on a Ray cluster",
                      _ingest_args, _ingest_run),
    "search": Command("search a feature store with a sentence, an example image or an example clip", _search_args,
                      _search_run),
    "serve": Command("serve the search and player pages and the JSON API over a feature store (waitress)",
                     _serve_args, _serve_run),
    "export": Command("export a checkpoint's text and video towers to ONNX (fp32 or int8) for searching and serving "
                      "without PyTorch", _export_args, _export_run),
    "demo": Command("the whole pipeline on a generated library with the shipped tiny model, then serve it",
                    _demo_args, _demo_run),
    "synth": Command("generate the moving-shapes library: H.264 videos with captions and time-reversed twins",
                     _synth_args, _synth_run),
    "import": Command("convert MSR-VTT, MSVD or your own captions (CSV/JSONL) into a data manifest",
                      _import_args, _import_run),
}


# --- entry point -----------------------------------------------------------------------------------------------------


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show (None, off) or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if _no_default(action) or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def _no_default(action: argparse.Action) -> bool:
    return action.default is None or action.default is False or action.default == argparse.SUPPRESS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidsearch",
        description="Text-to-video search: keyframes → CLIP features → a safe store → search, with AIM fine-tuning.",
    )
    parser.add_argument("--version", action="version", version=f"vidsearch {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        child = sub.add_parser(name, help=command.help, description=command.help, formatter_class=_HelpFormatter)
        command.add_arguments(child)
        for action in child._actions:  # options without a help line still show their default
            if action.help is None and not _no_default(action):
                action.help = "(default: %(default)s)"
        child.set_defaults(_run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO
    if env_rank() != 0:  # under torchrun only rank 0 says more than warnings
        level = logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        with logging_redirect_tqdm():  # a log line does not break a progress bar into two
            status = args._run(args)
        sys.stdout.flush()  # a closed pipe (`| head`) shows here, not in the interpreter's exit
        return status
    except UserError as error:
        print(f"vidsearch {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = RESUME_HINTS.get(args.command, "")
        print(f"vidsearch {args.command}: interrupted" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 141  # what a shell reports for a process ended by SIGPIPE
    except ModuleNotFoundError as error:
        if error.name not in TRAINING_MODULES:
            raise
        hint = ", or use an exported model (--model DIR)" if args.command in ("index", "search", "serve") else ""
        print(f"vidsearch {args.command}: error: this needs PyTorch ({error.name} is not installed): "
              f"pip install 'vidsearch[train]'{hint}", file=sys.stderr)
        return 2


# What a re-run does after Ctrl-C, for the commands whose work survives an interruption.
RESUME_HINTS = {
    "frames": "run the same command again to resume: finished videos are kept and skipped",
    "index": "run the same command again to resume: videos already in the store are skipped",
    "train": "run it again with --resume to continue from the last saved state",
    "demo": "run it again to resume: finished stages are skipped",
}


def _silence_stdout() -> None:
    """After the reader of stdout went away, point stdout at /dev/null so the exit's flush cannot fail again."""
    import os

    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # stdout is not a file (an embedding program's stream)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, descriptor)
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
