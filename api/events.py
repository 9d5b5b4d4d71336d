"""Wake requests that wait for a job to finish (``GET /v1/jobs/{id}?wait=S``).

One Redis pub/sub subscription per API process (``srgan:events:*``, published
by every state change in ``core.jobs``) fans out to the waiting requests, so a
client learns of a finished job at once without polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

import redis.asyncio as aioredis

from core.jobs import EVENTS_PATTERN, PREFIX

log = logging.getLogger(__name__)
_CHANNEL_PREFIX = PREFIX + "events:"


class JobEvents:
    def __init__(self, url: str) -> None:
        self.url = url
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
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
                            self._wake(str(message["channel"])[len(_CHANNEL_PREFIX):])
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

    def _wake(self, job_id: str) -> None:
        for event in self._waiters.get(job_id, ()):
            event.set()

    def _wake_all(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()

    @contextlib.contextmanager
    def watch(self, job_id: str, *more: str):
        """``with events.watch(id) as changed: ... await changed.wait()``; set on the next change of the job
        (or of any of the jobs given)."""
        event = asyncio.Event()
        ids = {job_id, *more}
        for one in ids:
            self._waiters[one].add(event)
        try:
            yield event
        finally:
            for one in ids:
                self._waiters[one].discard(event)
                if not self._waiters[one]:
                    del self._waiters[one]
