"""Per-key rate limit and quotas, and the admission of a job: each one Lua script in Redis.

Several API processes share the counters, and every decision is one script,
so no two requests can both pass a limit that only one of them fits under
(check-then-act). Limits are kept with GCRA (the generic cell rate algorithm:
one timestamp per limit, a burst of the whole allowance, refilled evenly), so
a refusal knows exactly when the next request would pass (``Retry-After``).

Its keys (``srgan:limit:{name}:...``, ``srgan:owner:{name}:...``) are ``core.keyspace``'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis

from core.keyspace import requests_key
from core.lua_scripts import register


@dataclass(frozen=True)
class RateDecision:
    """One request counted against a key's requests-per-minute limit."""

    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int
    reset_s: int

    def headers(self) -> dict[str, str]:
        """The ``RateLimit-*`` headers (IETF httpapi draft), plus ``Retry-After`` when refused."""
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
            "RateLimit-Policy": f"{self.limit};w=60",
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_s)
        return headers


@dataclass(frozen=True)
class JobLimits:
    """What one job admission is checked against (0: that limit is off)."""

    max_queued: int
    max_key_queued: int = 0
    pixels_per_hour: int = 0


class Refused(Exception):
    """A job was not admitted: ``code`` is ``queue_full`` or ``quota_exceeded``; retry after ``retry_after_s``."""

    def __init__(self, code: str, message: str, retry_after_s: int | None, status: int = 429) -> None:
        super().__init__(message)
        self.code, self.message, self.retry_after_s, self.status = code, message, retry_after_s, status


def _seconds(ms: int | float) -> int:
    return max(1, math.ceil(float(ms) / 1000))


class Limiter:
    """The per-key request limit: ``Limiter(client).hit(name, per_minute)``."""

    def __init__(self, client: redis.Redis) -> None:
        self._hit = register(client, "limit_hit")

    def hit(self, name: str, per_minute: int) -> RateDecision:
        allowed, limit, remaining, retry_ms, reset_ms = self._hit(keys=[requests_key(name)], args=[per_minute])
        return RateDecision(bool(allowed), int(limit), int(remaining), _seconds(retry_ms) if not allowed else 0,
                            math.ceil(int(reset_ms) / 1000))


def refusal(verdict: str, retry_ms: int, detail: str, limits: JobLimits, pixels: int) -> Refused:
    """The error for a refused admission (see the verdicts of ``core/lua/job_admit.lua``)."""
    if verdict == "queue_full":
        return Refused("queue_full", f"{limits.max_queued} jobs are already waiting; try again later", 10)
    if verdict == "key_queue_full":
        return Refused("quota_exceeded", f"this API key already has {detail} queued jobs, its limit "
                       f"(key_max_queued_jobs={limits.max_key_queued}); try again when some have started", 10)
    if verdict == "pixels":
        return Refused("quota_exceeded", f"this image ({pixels} pixels) does not fit in what is left of this API "
                       f"key's hourly quota of {limits.pixels_per_hour} input pixels "
                       f"(key_max_pixels_per_hour); it will in {_seconds(retry_ms)} s", _seconds(retry_ms))
    if verdict == "pixels_never":
        return Refused("quota_exceeded", f"this image ({pixels} pixels) is larger than this API key's whole hourly "
                       f"quota of {limits.pixels_per_hour} input pixels (key_max_pixels_per_hour)", None, 422)
    raise ValueError(f"unknown admission verdict {verdict!r}")
