"""The ``srgan`` command: the one argument parser of the project.

Each subcommand module only registers its arguments here; what it needs
(ONNX Runtime, TensorFlow, Celery...) is imported when it runs. Every command
returns an exit code of :data:`cli.exits.EXIT_CODES` (listed by ``srgan --help``).
``python -m cli ...`` is this same parser.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from cli import bench, exits, key, models, serve, train, upscale, worker
from model.errors import SRGANError

REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [
    upscale.register, serve.register, worker.register, models.register, key.register, train.register, bench.register,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="srgan", description="SRGAN image super-resolution: upscale, serve, train.",
                                     epilog=exits.help_text(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in REGISTRARS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return exits.fail("interrupted", exits.INTERRUPTED, command=args.command)
    except SRGANError as exc:  # a typed error (a model that fails to load...) a command did not report itself
        return exits.fail(exc.message, exits.FAILED, command=args.command)
    except FileNotFoundError as exc:  # a path a command was given that is not there: nothing could be done
        return exits.fail(exits.describe_os_error(exc), exits.USAGE, command=args.command)
    except OSError as exc:  # what a command did not handle itself: one sentence, not a traceback or [Errno N]
        return exits.fail(exits.describe_os_error(exc), exits.FAILED, command=args.command)


if __name__ == "__main__":
    sys.exit(main())
