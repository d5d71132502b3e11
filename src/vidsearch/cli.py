"""The `vidsearch` command: a flat table of subcommands.

Each subcommand is one entry in COMMANDS: a help line, a function that adds its arguments, and a function that turns
the parsed arguments into config objects and calls the library. No library logic lives here.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from dataclasses import dataclass
from typing import Callable

from vidsearch import __version__
from vidsearch.distributed import env_rank

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


class UserError(Exception):
    """A problem with the user's input: printed without a traceback, exit status 2."""


# --- subcommands -----------------------------------------------------------------------------------------------------


def _convert_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="weights file or directory: OpenAI .pt (TorchScript), open_clip .pt/.bin/.safetensors, "
                        "or a Hugging Face CLIP directory")
    parser.add_argument("--out", required=True, help="where to write the .safetensors file (open_clip parameter names)")


def _convert_run(args: argparse.Namespace) -> int:
    from vidsearch.model.backbone import convert_to_safetensors

    out = convert_to_safetensors(args.source, args.out)
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
    print(f"wrote {len(records)} videos to {save_manifest(records, args.out)}")
    return 0


def _import_records(args: argparse.Namespace) -> list:
    from pathlib import Path

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
    parser.add_argument("--frames", type=int, default=12, help="keyframes per video (per moment with moments)")
    parser.add_argument("--size", type=int, default=224, help="side of the square JPEG keyframes")
    parser.add_argument("--fps", type=float, default=1.0, help="uniform: candidate frames per second")
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

    config = FrameConfig(sampler=args.sampler, frames=args.frames, size=args.size, fps=args.fps,
                         jpeg_quality=args.quality, segment_seconds=args.segment_seconds, scenes=args.scenes)
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
                        compile=args.compile, grad_checkpointing=args.grad_checkpointing, log_every=args.log_every)
    return RunRequest(data=args.data, frames=args.frames, model=model, train=train, weights=args.weights,
                      pretrained=args.pretrained, init=args.init)


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
    parser.add_argument("--split", choices=["train", "val", "test"], default="test")
    parser.add_argument("--dsl", action="store_true", help="also report dual-softmax re-scored results")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--workers", type=int, default=2, help="JPEG decoding processes")


def _evaluate_run(args: argparse.Namespace) -> int:
    import json

    from vidsearch.data.manifest import ManifestError
    from vidsearch.eval.evaluate import evaluate_checkpoint
    from vidsearch.model.weights import WeightsError
    from vidsearch.video.cache import CacheFormatError

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


def _add_model_source_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model (one of)")
    group.add_argument("--checkpoint", help="a vidsearch checkpoint directory (from `vidsearch train`)")
    group.add_argument("--weights", help="CLIP weights: OpenAI .pt, open_clip .safetensors/.pt, or a Hugging Face "
                                         "CLIP directory (see `vidsearch convert --help`)")
    group.add_argument("--pretrained", help="an open_clip pretrained tag, e.g. openai (downloaded by open_clip; "
                                            "needs internet the first time)")
    group.add_argument("--model", default="ViT-B-32", help="architecture for --weights/--pretrained (default ViT-B-32)")
    group.add_argument("--random-weights", action="store_true",
                       help="random weights (for trying the pipeline out only: search results are meaningless)")


def _model_source(args: argparse.Namespace) -> "ModelSource":
    from vidsearch.model.source import ModelSource

    try:
        source = ModelSource(checkpoint=args.checkpoint, backbone=args.model, weights=args.weights,
                             pretrained=args.pretrained)
    except ValueError as error:
        raise UserError(str(error)) from None
    if not source.has_weights and not args.random_weights:
        raise UserError("no model given. Pass --checkpoint RUN/best (from `vidsearch train`), or CLIP weights with "
                        "--weights FILE_OR_DIR (OpenAI ViT-B-32.pt, an open_clip .safetensors, or a Hugging Face "
                        "CLIP directory such as openai/clip-vit-base-patch32 downloaded with its config.json), or "
                        "--pretrained openai when online")
    return source


def _index_args(parser: argparse.ArgumentParser) -> None:
    _add_model_source_args(parser)
    parser.add_argument("--frames", required=True, help="keyframe cache directory (from `vidsearch frames`)")
    parser.add_argument("--store", required=True, help="feature store directory (created if absent)")
    parser.add_argument("--data", help="data manifest (JSONL) with captions and categories for text match and filters")
    parser.add_argument("--rebuild", action="store_true", help="start the store afresh instead of adding new videos")
    parser.add_argument("--batch-size", type=int, default=16, help="videos (or moments) encoded at once")
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu",
                        help="under torchrun, cuda means each rank's local GPU")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None,
                        help="default: bf16 on a GPU, fp32 on the CPU")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _index_run(args: argparse.Namespace) -> int:
    from vidsearch.data.manifest import ManifestError, load_manifest
    from vidsearch.model.weights import WeightsError
    from vidsearch.distributed import env_world
    from vidsearch.store.indexer import index_cache, index_cache_sharded
    from vidsearch.store.store import StoreError
    from vidsearch.web.setup import CaptionLoadError, load_caption_database

    source = _model_source(args)
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
    except (ManifestError, WeightsError, StoreError, FileNotFoundError, ValueError, CaptionLoadError) as error:
        raise UserError(str(error)) from None
    except OSError as error:
        return _disk_full(error, "index")
    print(f"indexed {report.videos_added} videos ({report.rows_added} rows), {report.videos_skipped} already in the "
          f"store, {report.videos_failed_in_cache} failed in the cache; store version {report.version} "
          f"in {report.seconds:.1f} s")
    if captions:
        print(captions)
    return 0


def _ingest_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="VIDEO_OR_DIR", help="video files, or directories searched for them")
    parser.add_argument("--store", required=True, help="feature store directory (created if absent)")
    _add_model_source_args(parser)
    parser.add_argument("--frames", help="keyframe cache directory (default: the store's, else STORE-frames)")
    parser.add_argument("--ray", metavar="ADDRESS", help="run on a Ray cluster: its address, or auto (the cluster of "
                                                        "this machine, else a local one); needs vidsearch[cluster]")
    parser.add_argument("--batch-videos", type=int, default=64, help="videos per published store version")
    parser.add_argument("--batch-size", type=int, default=16, help="videos (or moments) encoded at once")
    parser.add_argument("--keyframes", type=int, help="keyframes per video of a new cache (default 12)")
    parser.add_argument("--size", type=int, help="side of the square keyframes of a new cache (default 224)")
    parser.add_argument("--workers", type=int, help="without --ray: videos decoded at once (default: one per core)")
    parser.add_argument("--encoders", type=int, help="with --ray: encoder actors (default: one per GPU, else 1)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one video may take before it fails")
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu", help="without --ray: where the model runs")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")


def _ingest_run(args: argparse.Namespace) -> int:
    from vidsearch.ingest.job import RayMissing, default_cache, frame_config, ingest
    from vidsearch.model.weights import WeightsError
    from vidsearch.store.store import StoreError
    from vidsearch.video.cache import CacheFormatError
    from vidsearch.video.decode import DecodeLimits

    source = _model_source(args)
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
    parser.add_argument("query", help="a sentence describing what to find")
    parser.add_argument("--store", required=True, help="feature store directory (from `vidsearch index`)")
    parser.add_argument("-k", type=int, default=10, help="number of videos to return")
    parser.add_argument("--mode", choices=["vector", "text", "hybrid"], default="vector",
                        help="vector: CLIP similarity; text: caption substring match; hybrid: both, fused")
    parser.add_argument("--threshold", type=float, help="minimum cosine similarity of a moment")
    parser.add_argument("--category", help="only videos of this category")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _search_run(args: argparse.Namespace) -> int:
    import json

    from vidsearch.store.indexer import open_searcher
    from vidsearch.store.search import SearchOptions
    from vidsearch.store.store import StoreError

    if not args.query.strip() or args.k < 1:
        raise UserError("the query must not be empty and -k must be at least 1")
    try:
        result = open_searcher(args.store).search(args.query, SearchOptions(
            k=args.k, mode=args.mode, threshold=args.threshold, category=args.category))
    except (StoreError, ValueError) as error:
        raise UserError(str(error)) from None
    print(json.dumps(result.to_dict(), indent=2) if args.json else _format_hits(result))
    return 0


def _serve_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True, help="feature store directory (from `vidsearch index`)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=4, help="requests served at once")
    parser.add_argument("--behind-https-proxy", action="store_true",
                        help="the site is reached over HTTPS through a proxy on 127.0.0.1 that sets X-Forwarded-Proto: "
                             "secure cookies, HSTS, redirects to https")


def _serve_run(args: argparse.Namespace) -> int:
    from vidsearch.web.library.engine import LibraryUnavailable
    from vidsearch.web.server import serve

    try:
        serve(store_dir=args.store, host=args.host, port=args.port, threads=args.threads,
              https=args.behind_https_proxy)
    except LibraryUnavailable as error:
        raise UserError(str(error)) from None
    return 0


def _format_hits(result) -> str:
    lines = [f"{len(result.hits)} videos for {result.query!r} ({result.index}, {sum(result.timings_ms.values()):.1f} ms)"]
    for rank, hit in enumerate(result.hits, 1):
        moment = hit.moments[0] if hit.moments else None
        span = f" {moment.start:.1f}–{moment.end:.1f} s" if moment and moment.start is not None else ""
        score = f"{hit.score:.3f}" if hit.score is not None else "  -  "
        lines.append(f"{rank:3d}. {score}  {hit.video_id}{span}" + (f"  [{hit.category}]" if hit.category else ""))
    return "\n".join(lines)


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

    report = prepare_demo(workdir=args.workdir, retrain=args.retrain, videos=args.videos)
    stages = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in report.seconds.items())
    print(f"demo ready ({stages}); checkpoint {report.checkpoint}")
    if args.no_serve:
        return 0
    print(f"\nserving the demo library on http://{args.host}:{args.port}/  (Ctrl-C stops)\ntry:")
    for query in EXAMPLE_QUERIES:
        print(f"  {query}")
    serve(store_dir=report.paths.store, host=args.host, port=args.port)
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
    "search": Command("search a feature store with a sentence", _search_args, _search_run),
    "serve": Command("serve the search and player pages and the JSON API over a feature store (waitress)",
                     _serve_args, _serve_run),
    "demo": Command("the whole pipeline on a generated library with the shipped tiny model, then serve it",
                    _demo_args, _demo_run),
    "synth": Command("generate the moving-shapes library: H.264 videos with captions and time-reversed twins",
                     _synth_args, _synth_run),
    "import": Command("convert MSR-VTT, MSVD or your own captions (CSV/JSONL) into a data manifest",
                      _import_args, _import_run),
}


# --- entry point -----------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidsearch",
        description="Text-to-video search: keyframes → CLIP features → a safe store → search, with AIM fine-tuning.",
    )
    parser.add_argument("--version", action="version", version=f"vidsearch {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        child = sub.add_parser(name, help=command.help, description=command.help)
        command.add_arguments(child)
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
    try:
        return args._run(args)
    except UserError as error:
        print(f"vidsearch {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
