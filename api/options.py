"""Request headers and fields that shape how ``POST /v1/jobs`` answers: ``Prefer``, ``Cancel-After``/``deadline``.

Pure parsing, so each rule is tested on its own; the routes turn a ``ValueError`` into a 422.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_WAIT = re.compile(r"^wait\s*=\s*\"?(\d+(?:\.\d+)?)\"?$", re.IGNORECASE)


def parse_prefer_wait(header: str | None, *, limit: float) -> float | None:
    """Seconds of ``Prefer: wait=N`` (RFC 7240; other preferences are ignored), at most ``limit``."""
    if not header:
        return None
    for token in re.split(r"[,;]", header):
        match = _WAIT.match(token.strip())
        if match:
            return min(float(match.group(1)), limit)
    return None


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``1.5m``, ``2h``, ``500ms`` -> seconds (a bare number is seconds)."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text[:40]!r} is not a duration like 90s, 5m or 1h")
    return float(match.group(1)) * _UNITS[(match.group(2) or "s").lower()]


def parse_deadline(*, cancel_after: str | None, deadline: str | None, now: float, longest_s: float) -> float | None:
    """The job's deadline as unix time, from a ``Cancel-After`` duration or a ``deadline`` field.

    ``deadline`` is a duration from now or an ISO 8601 time with a zone (``2026-05-01T12:00:00Z``).
    Both at once, a deadline not in the future, or one beyond ``longest_s`` (the job's lifetime) is
    a ``ValueError``.
    """
    if cancel_after and deadline:
        raise ValueError("give the deadline once: the Cancel-After header or the deadline field, not both")
    text = cancel_after or deadline
    if not text:
        return None
    try:
        at = now + parse_duration(text)
    except ValueError:
        if cancel_after:
            raise
        try:
            when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"deadline {text[:40]!r} is neither a duration (90s, 5m) nor an ISO 8601 time") from None
        if when.tzinfo is None:
            raise ValueError(f"deadline {text[:40]!r} has no time zone (add Z or +02:00)") from None
        at = when.astimezone(timezone.utc).timestamp()
    if at <= now:
        raise ValueError("the deadline has already passed")
    if at - now > longest_s:
        raise ValueError(f"the deadline is more than {longest_s:g} s away, beyond the job's lifetime")
    return at
