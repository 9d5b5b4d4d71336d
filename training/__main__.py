"""``python -m training train|export|eval ...``: the training commands without the ``srgan`` entry point."""

from __future__ import annotations

import argparse
import sys

from training.cli import register


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
