"""The exit codes of every ``srgan`` command and the one way a command reports a failure.

``srgan --help`` prints :data:`EXIT_CODES`; each command returns one of them.
"""

from __future__ import annotations

import sys

OK = 0
FAILED = 1
USAGE = 2
INTERRUPTED = 130

EXIT_CODES: dict[int, str] = {
    OK: "done",
    FAILED: "the work failed: an image that could not be upscaled, a refused deploy, a failed export or run",
    USAGE: "nothing was done: bad arguments or settings, a missing model, file or server",
    INTERRUPTED: "interrupted (Ctrl-C or SIGTERM); a training run saved a checkpoint first",
}


def fail(message: str, code: int = FAILED, *, command: str | None = None) -> int:
    """Print ``srgan [COMMAND]: error: MESSAGE`` on stderr and return ``code`` (an :data:`EXIT_CODES` key)."""
    assert code in EXIT_CODES, code
    print(f"srgan{' ' + command if command else ''}: error: {message}", file=sys.stderr)
    return code


def help_text() -> str:
    """The exit-code table for ``srgan --help``."""
    return "exit codes:\n" + "\n".join(f"  {code:<4} {text}" for code, text in EXIT_CODES.items())
