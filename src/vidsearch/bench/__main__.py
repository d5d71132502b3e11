"""`python -m vidsearch.bench NAME [--quick] [...]`: run one benchmark module, `vidsearch.bench.<name>`.

Each module defines `add_arguments(parser)` (optional) and `run(args) -> None`, and reports through `common.emit`:
one JSON object per line per measurement, then one summary line with the ratio against a baseline measured in the
same run.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import vidsearch.bench as package


def available() -> list[str]:
    names = [m.name for m in pkgutil.iter_modules(package.__path__) if m.name not in {"__main__", "common"}]
    return sorted(name.replace("_", "-") for name in names)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    names = available()
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in names:
        print(f"usage: python -m vidsearch.bench NAME [--quick] [options]\nbenchmarks: {', '.join(names)}", file=sys.stderr)
        return 0 if argv and argv[0] in {"-h", "--help"} else 2
    module = importlib.import_module(f"vidsearch.bench.{argv[0].replace('-', '_')}")
    parser = argparse.ArgumentParser(prog=f"python -m vidsearch.bench {argv[0]}", description=module.__doc__)
    parser.add_argument("--quick", action="store_true", help="a small, fast version (used by tests and on CPUs)")
    if hasattr(module, "add_arguments"):
        module.add_arguments(parser)
    module.run(parser.parse_args(argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
