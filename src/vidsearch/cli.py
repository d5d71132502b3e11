"""The `vidsearch` command: a flat table of subcommands.

Each subcommand is one entry in COMMANDS: a help line, a function that adds its arguments, and a function that turns
the parsed arguments into config objects and calls the library. No library logic lives here.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from typing import Callable

from vidsearch import __version__

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


COMMANDS: dict[str, Command] = {
    "convert": Command("convert CLIP weights in any supported format to safetensors, without executing code",
                       _convert_args, _convert_run),
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
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
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
