"""Wake requests that wait for a job's changes (``?wait=S``, ``Prefer: wait``, event streams).

One Redis pub/sub subscription per API process (``srgan:events:*``, published
by every change in ``core.jobs``) fans out to the waiting requests, so a
client learns of a change at once without polling. A waiter that only cares
about status changes (a long poll) is not woken by progress events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import Iterator

import redis.asyncio as aioredis

from core.keyspace import EVENTS_CHANNEL_PREFIX, EVENTS_PATTERN

log = logging.getLogger(__name__)

KEEPALIVE_S = 15.0
"""An event stream with nothing to say sends a comment this often (proxies close silent connections)."""
RETRY_MS = 1000
"""The ``retry:`` an event stream asks browsers to reconnect after."""


def _is_status(data: object) -> bool:
    """False for a progress event; anything else (a status event, an unreadable one) counts as a status change."""
    try:
        return json.loads(str(data)).get("type") != "progress"
    except (ValueError, AttributeError):
        return True


class JobEvents:
    def __init__(self, url: str) -> None:
        self.url = url
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._status_waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="srgan-job-events")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            client = aioredis.Redis.from_url(self.url, decode_responses=True)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.psubscribe(EVENTS_PATTERN)
                    self.subscribed.set()
                    backoff = 0.1
                    async for message in pubsub.listen():
                        if message.get("type") == "pmessage":
                            job_id = str(message["channel"])[len(EVENTS_CHANNEL_PREFIX):]
                            self._wake(job_id, _is_status(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect; waiters fall back to their timeout
                self.subscribed.clear()
                log.warning("job events: %s; reconnecting in %.1f s", exc, backoff)
                self._wake_all()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                await client.aclose()

    def _wake(self, job_id: str, status: bool = True) -> None:
        for event in self._waiters.get(job_id, ()):
            event.set()
        if status:
            for event in self._status_waiters.get(job_id, ()):
                event.set()

    def _wake_all(self) -> None:
        for waiters in (self._waiters, self._status_waiters):
            for events in waiters.values():
                for event in events:
                    event.set()

    @contextlib.contextmanager
    def watch(self, job_id: str, *more: str, status_only: bool = False) -> Iterator[asyncio.Event]:
        """``with events.watch(id) as changed: ... await changed.wait()``; set on the next change of the job
        (or of any of the jobs given); ``status_only``: on the next change of status, not of progress."""
        event = asyncio.Event()
        ids = {job_id, *more}
        waiters = self._status_waiters if status_only else self._waiters
        for one in ids:
            waiters[one].add(event)
        try:
            yield event
        finally:
            for one in ids:
                waiters[one].discard(event)
                if not waiters[one]:
                    del waiters[one]
