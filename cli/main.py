"""The ``srgan`` command. Each subcommand module only registers its arguments here;
what it needs (ONNX Runtime, TensorFlow, Celery...) is imported when it runs."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from cli import deploy, key, upscale

REGISTRARS = [upscale.register, deploy.register, key.register]


def _registrars() -> list:
    from cli import serve, worker
    from training import cli as training_cli

    return [*REGISTRARS, serve.register, worker.register, training_cli.register]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="srgan", description="SRGAN image super-resolution: upscale, serve, train.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in _registrars():
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
