"""The exit codes of every ``srgan`` command and the one way a command reports a failure.

``srgan --help`` prints :data:`EXIT_CODES`; each command returns one of them.
"""

from __future__ import annotations

import errno
import sys
from pathlib import Path

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


_WHAT_TO_DO = {
    errno.ENOENT: "no such file or folder; check the path",
    errno.EACCES: "permission denied; check its permissions or choose another place",
    errno.EPERM: "permission denied; check its permissions or choose another place",
    errno.EISDIR: "is a folder where a file was expected; name a file",
    errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
    errno.EEXIST: "a file is in the way (a folder was to be made there); move it or choose another path",
    errno.ENOSPC: "no space left on the device; free some space or write elsewhere",
    errno.EROFS: "the file system is read-only; write elsewhere",
}


def describe_os_error(exc: OSError) -> str:
    """One sentence for a user: the file an ``OSError`` is about and what to do (never ``[Errno 2] ...``)."""
    name = exc.filename if exc.filename is not None else ""
    what = _WHAT_TO_DO.get(exc.errno or 0) or (f"{exc.strerror.lower()}" if exc.strerror else str(exc))
    return f"{name}: {what}" if name else what


def missing_path(*paths: Path | None) -> str | None:
    """The sentence for the first of ``paths`` (None: not given) that does not exist, else None."""
    for path in paths:
        if path is not None and not path.exists():
            return f"{path}: no such file or folder; check the path (nothing was done)"
    return None


def error_text(exc: BaseException) -> str:
    """What to print for an error: :func:`describe_os_error` for an ``OSError``, else its message."""
    return describe_os_error(exc) if isinstance(exc, OSError) else str(getattr(exc, "message", None) or exc)


def help_text() -> str:
    """The exit-code table for ``srgan --help``."""
    return "exit codes:\n" + "\n".join(f"  {code:<4} {text}" for code, text in EXIT_CODES.items())
