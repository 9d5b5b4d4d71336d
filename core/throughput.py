"""Workers' measured engine throughput, and the engine time a job would take.

Each worker process publishes, per model name, the input pixels per second
of engine time it achieved (a probe run when its model is loaded, then a
moving average over real jobs of at least ``MIN_PIXELS``). The API estimates
a new job's engine time from its pixels and the fastest fresh measurement,
and refuses what could not finish inside the soft time limit
(``422 too_expensive``). With no measurement yet, nothing is refused.

Redis: hash ``srgan:throughput``, field ``<model name>|<host>:<pid>``,
value JSON ``{"px_s": float, "at": unix time}``.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import cast

import redis

from core.keyspace import THROUGHPUT

MIN_PIXELS = 128 * 128
"""Smaller runs are dominated by per-call overhead and would make the engine look slower than it is."""
SMOOTHING = 0.5
"""Weight of the previous average when a new measurement comes in."""


def process_name() -> str:
    """Who measured: this host and process (each worker process publishes its own figure)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def passes_for(has_alpha: bool) -> int:
    """Engine passes over the image: colour, and alpha when there is one (see ``model.images.upscale_image``)."""
    return 2 if has_alpha else 1


def record(client: redis.Redis, model: str, pixels: int, seconds: float, *, source: str | None = None) -> float | None:
    """Fold one run (``pixels`` through the engine in ``seconds``) into this process's figure; the new figure."""
    if pixels < MIN_PIXELS or seconds <= 0:
        return None
    field = f"{model}|{source or process_name()}"
    measured = pixels / seconds
    previous = client.hget(THROUGHPUT, field)
    if previous:
        try:
            measured = SMOOTHING * float(json.loads(previous)["px_s"]) + (1 - SMOOTHING) * measured
        except (ValueError, KeyError, TypeError):
            pass
    client.hset(THROUGHPUT, field, json.dumps({"px_s": round(measured, 3), "at": time.time()}))
    return measured


def fastest(client: redis.Redis, model: str, *, max_age_s: float) -> float | None:
    """The highest pixels/s any worker process measured for ``model`` in the last ``max_age_s``.

    Stale and unreadable entries are dropped on the way.
    """
    now = time.time()
    best: float | None = None
    stale: list[str] = []
    for field, raw in cast("dict[str, str]", client.hgetall(THROUGHPUT)).items():  # a decode_responses client
        try:
            entry = json.loads(raw)
            px_s, at = float(entry["px_s"]), float(entry["at"])
        except (ValueError, KeyError, TypeError):
            stale.append(field)
            continue
        if now - at > max_age_s:
            stale.append(field)
        elif field.rpartition("|")[0] == model and px_s > 0:
            best = px_s if best is None else max(best, px_s)
    if stale:
        client.hdel(THROUGHPUT, *stale)
    return best


def of_this_process(client: redis.Redis, model: str, *, max_age_s: float) -> float | None:
    """The pixels/s this process measured for ``model`` in the last ``max_age_s``, or None."""
    raw = client.hget(THROUGHPUT, f"{model}|{process_name()}")
    try:
        entry = json.loads(cast(str, raw)) if raw else None
        px_s, at = (float(entry["px_s"]), float(entry["at"])) if entry else (0.0, 0.0)
    except (ValueError, KeyError, TypeError):
        return None
    return px_s if px_s > 0 and time.time() - at <= max_age_s else None


def encoder(fmt: str) -> str:
    """The name the encoder of output format ``fmt`` records its speed under (output pixels per second)."""
    return f"encode:{fmt}"


class TimeLeft:
    """Seconds left of one render, from its own pace: the tiles left at the rate of its tiles so far (the
    tiles of an image all have the same shape), plus ``tail_s``, the expected encode time (at the speed the
    encoder recorded; a large PNG takes as long to encode as to upscale). Before its first tile:
    ``prior_s`` (the expected engine time at a recorded speed, :func:`estimate_engine_s`) less the time spent."""

    def __init__(self, prior_s: float | None = None, tail_s: float = 0.0) -> None:
        self.began = time.monotonic()
        self.prior_s = prior_s
        self.tail_s = tail_s

    def at(self, done: int, total: int) -> float | None:
        """Seconds left with ``done`` of ``total`` tiles done; None with neither tiles done nor a prior."""
        elapsed = time.monotonic() - self.began
        if done >= total:
            return self.tail_s
        if done > 0:
            return (total - done) * elapsed / done + self.tail_s
        return max(self.prior_s - elapsed, 0.0) + self.tail_s if self.prior_s is not None else None


def estimate_engine_s(pixels: int, passes: int, px_s: float) -> float:
    return pixels * passes / px_s
