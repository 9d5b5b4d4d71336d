"""The HTTP server: uvicorn with deadlines for slow and idle connections and a cap on open connections.

uvicorn (0.54, h11) starts no timer on a new connection: its keep-alive timeout runs only after a first
answer, and any byte received cancels it. A socket that sends nothing, or its request head one byte every
few seconds, is kept for ever, each one a file descriptor, until the process has none left. Its
``limit_concurrency`` does not help: it answers 503 to requests beyond the limit, but only once their
headers are in, and it still accepts (and keeps) every socket. ``GuardedH11Protocol`` adds, per connection:

- an idle deadline (``http_idle_timeout_s``): no byte of a request that long after the connection opened,
  or after its previous answer: closed;
- a header deadline (``http_header_timeout_s``): the request line and headers not complete that long after
  the same moment: closed, however the bytes trickle in (slowloris);
- a connection cap (``http_max_connections``): a connection beyond it closes the one that has waited
  longest for a request (so a flood of idle sockets cannot lock out a health check), or is itself closed at
  once when every connection is busy with a request.

Slow request bodies are the application's business (``upload_idle_timeout_s``, 408). What was closed is
logged as one summary line at most every ``LOG_EVERY_S``, never one line per connection.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import resource
import time
import weakref
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from core.settings import Settings, get_settings

log = logging.getLogger("srgan.server")

LOG_EVERY_S = 10.0
FD_RESERVE = 256
"""File descriptors kept free of client connections: Redis, uploads' temporary files, logs, the model files."""


class _Closures:
    """Counts of the connections one server's guards closed, logged as one line at most every LOG_EVERY_S:
    the first closure schedules the line, which sums up every closure until it is written."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.logged_at = float("-inf")
        self.pending: asyncio.TimerHandle | None = None

    def note(self, reason: str, loop: asyncio.AbstractEventLoop) -> None:
        self.counts[reason] += 1
        if self.pending is None:
            self.pending = loop.call_later(max(0.0, self.logged_at + LOG_EVERY_S - time.monotonic()), self.write)

    def write(self) -> None:
        self.pending = None
        if self.counts:
            summary = ", ".join(f"{n} {why}" for why, n in sorted(self.counts.items()))
            log.warning("connections closed: %s", summary)
            self.counts.clear()
            self.logged_at = time.monotonic()


class _ServerGuard:
    """What the connections of one uvicorn server share: those waiting for a request, oldest first, and the
    count of closures."""

    def __init__(self) -> None:
        self.waiting: collections.OrderedDict[GuardedH11Protocol, None] = collections.OrderedDict()
        self.closures = _Closures()


_GUARDS: weakref.WeakKeyDictionary[ServerState, _ServerGuard] = weakref.WeakKeyDictionary()


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the idle and header deadlines and the connection cap (module docstring).

    ``srgan serve`` uses a subclass bound to its settings (``guarded_protocol``); run by hand,
    ``uvicorn --http api.server:GuardedH11Protocol`` reads them from the environment (``SRGAN_HTTP_*``).
    """

    settings: ClassVar[Settings | None] = None

    def __init__(self, config: uvicorn.Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        settings = self.settings or _environment_settings()
        self.idle_s = settings.http_idle_timeout_s
        self.header_s = settings.http_header_timeout_s
        self.max_connections = settings.http_max_connections
        guard = _GUARDS.setdefault(server_state, _ServerGuard())
        self.waiting, self.closures = guard.waiting, guard.closures
        self.waiting_since: float | None = None
        self.bytes_seen = False
        self.deadline: asyncio.TimerHandle | None = None

    # --- the connection's life ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            victim = next(iter(self.waiting), None)  # the one waiting longest for a request
            if victim is None:  # every connection is busy with a request: refuse this one
                self.closures.note("refused at the connection cap", self.loop)
                transport.abort()
                return
            self.closures.note("closed idle at the connection cap", self.loop)
            victim.close_waiting(abort=True)
        self.await_request()

    def data_received(self, data: bytes) -> None:
        if self.waiting_since is not None and not self.bytes_seen:
            self.bytes_seen = True  # from now on only the header deadline
            self.arm(self.waiting_since + self.header_s)
        super().data_received(data)
        if self.waiting_since is not None and self.in_request():
            self.stop_waiting()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start a pipelined request at once
        if not self.transport.is_closing() and not self.in_request():
            self.await_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_waiting()
        super().connection_lost(exc)

    # --- deadlines -------------------------------------------------------------------------------

    def in_request(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def await_request(self) -> None:
        self.waiting_since = self.loop.time()
        self.bytes_seen = False
        self.waiting[self] = None
        self.waiting.move_to_end(self)
        self.arm(self.waiting_since + min(self.idle_s, self.header_s))

    def stop_waiting(self) -> None:
        self.waiting_since = None
        self.waiting.pop(self, None)
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def arm(self, when: float) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        self.deadline = self.loop.call_at(when, self.expire)

    def expire(self) -> None:
        self.deadline = None
        if self.waiting_since is None or self.in_request():
            return
        if self.bytes_seen and self.conn.their_state is h11.IDLE:
            self.closures.note(f"slow request headers (over {self.header_s:g} s)", self.loop)
        else:
            self.closures.note(f"idle (nothing sent for {self.idle_s:g} s)", self.loop)
        self.close_waiting(abort=False)

    def close_waiting(self, *, abort: bool) -> None:
        """Close a connection that waits for a request: at once (``abort``), or after what it was sent is
        flushed, and at the latest one idle period later (a peer that reads nothing keeps no socket)."""
        self.stop_waiting()
        if abort:
            self.transport.abort()
            return
        self.transport.close()
        self.loop.call_later(self.idle_s, self.transport.abort)


@functools.lru_cache(maxsize=1)
def _environment_settings() -> Settings:
    """The settings of ``uvicorn --http api.server:GuardedH11Protocol``, the cap fitted once, at the first
    connection."""
    return fit_connection_cap(get_settings())


def guarded_protocol(settings: Settings) -> type[GuardedH11Protocol]:
    """``GuardedH11Protocol`` bound to ``settings`` (instead of the environment's)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"settings": settings})


def fit_connection_cap(settings: Settings) -> Settings:
    """Raise this process's file descriptor limit to its hard limit, and lower ``http_max_connections`` to what
    it leaves after ``FD_RESERVE``: accepting never runs out of descriptors (each failed accept is an error)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the file descriptor limit from %d to %d: %s", soft, hard, exc)
    if soft == resource.RLIM_INFINITY:
        return settings
    room = max(1, soft - FD_RESERVE)
    if settings.http_max_connections <= room:
        return settings
    log.warning("http_max_connections %d lowered to %d: the process may open %d files",
                settings.http_max_connections, room, soft)
    return settings.model_copy(update={"http_max_connections": room})


def server_config(app: Any, settings: Settings, *, host: str, port: int, log_level: str) -> uvicorn.Config:
    """The uvicorn configuration ``srgan serve`` runs: the guarded protocol, no ``server`` banner."""
    return uvicorn.Config(
        app, host=host, port=port, log_level=log_level, http=guarded_protocol(settings),
        timeout_keep_alive=max(1, round(settings.http_idle_timeout_s)), server_header=False,
        timeout_graceful_shutdown=10,
    )
