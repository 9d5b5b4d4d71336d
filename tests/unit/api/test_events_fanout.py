"""api.events.JobEvents fans one subscription out: event streams wake on every change, long polls on status."""

from __future__ import annotations

import asyncio
import json

import pytest

from api.events import JobEvents, _is_status

pytestmark = pytest.mark.unit


def test_progress_wakes_streams_but_not_long_polls():
    async def scenario() -> None:
        events = JobEvents("redis://unused:1/0")
        with events.watch("a", "b") as stream, events.watch("a", status_only=True) as poll:
            events._wake("a", status=False)
            assert stream.is_set() and not poll.is_set()
            stream.clear()
            events._wake("b", status=True)
            assert stream.is_set() and not poll.is_set()
            events._wake("a", status=True)
            assert poll.is_set()
        assert not events._waiters and not events._status_waiters, "watchers are removed on exit"

    asyncio.run(scenario())


def test_which_payloads_are_status_changes():
    assert _is_status(json.dumps({"type": "status", "status": "running"}))
    assert not _is_status('{"seq":3,"type":"progress","status":"running","progress":0.1}')
    assert _is_status("not json") and _is_status("canceled")
