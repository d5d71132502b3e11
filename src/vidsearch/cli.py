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


COMMANDS: dict[str, Command] = {
    "convert": Command("convert CLIP weights in any supported format to safetensors, without executing code",
                       _convert_args, _convert_run),
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
