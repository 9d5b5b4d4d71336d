"""``GET /v1/jobs/{id}/events``: a job's status and progress as Server-Sent Events.

Every change of a job is an event in its log (``core.jobs``: ``seq`` counts from 1); the stream
sends the log from the start (or after ``Last-Event-ID``), then each new event as the job's pub/sub
message wakes it, and ends after the event of the final state. A reconnecting ``EventSource`` sends
``Last-Event-ID`` itself and misses nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import JobDep, Services, ServicesDep, reject_unknown_query, require_api_key
from api.errors import ApiError
from api.events import KEEPALIVE_S, RETRY_MS
from api.openapi import AUTH, error_responses
from core.job_record import Job
from core.job_states import TERMINAL

router = APIRouter(prefix="/v1/jobs", tags=["jobs"],
                   dependencies=[Depends(require_api_key), Depends(reject_unknown_query)])

def format_event(event: dict) -> str:
    return f"id: {event['seq']}\nevent: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"


def _final(event: dict) -> bool:
    return event["type"] == "status" and event["status"] in TERMINAL


async def stream_events(services: Services, job: Job, after: int) -> AsyncIterator[str]:
    yield f"retry: {RETRY_MS}\n\n"
    with services.events.watch(job.id) as changed:
        while True:
            changed.clear()  # before reading: an event published while we read still wakes the wait below
            events = await run_in_threadpool(services.store.events_since, job.id, after)
            for event in events:
                yield format_event(event)
                after = int(event["seq"])
                if _final(event):
                    return
            if not events:
                latest = await run_in_threadpool(services.store.get, job.id)
                if latest is None or (latest.finished and latest.seq <= after):
                    return  # expired, or its final event was sent before (the client resumed after it)
            try:
                await asyncio.wait_for(changed.wait(), timeout=KEEPALIVE_S)
            except asyncio.TimeoutError:
                yield ": keep-alive\n\n"


@router.get("/{job_id}/events", summary="Live status and progress (Server-Sent Events)",
            response_class=StreamingResponse, responses={
                200: {"content": {"text/event-stream": {}}, "description": (
                    "`text/event-stream`. Each event has `id` = the job's event number `seq`, `event` = "
                    "`status` or `progress`, and `data` = JSON `{seq, type, status, progress, at}` (`at`: unix "
                    "time of the change; `error` on failed, canceled and aborted jobs; `eta_s`, the estimated "
                    "seconds left, on a running job's events once known). The stream ends after "
                    "the final status.")},
                **error_responses(*AUTH, "not_found")})
async def job_events(
    job: JobDep,
    services: ServicesDep,
    # typed str, not str | None: the document then says "digits", not "digits or null" (a header is never null)
    last_event_id: Annotated[str, Header(pattern=r"^\s*[0-9]{1,18}\s*$", description="resume after this "
                                         "event (`seq`); EventSource sends it when it reconnects")] = None,  # type: ignore[assignment]
) -> StreamingResponse:
    after = 0
    if last_event_id:
        if not last_event_id.strip().isdigit():
            raise ApiError(422, "invalid_parameter", "Last-Event-ID must be an event number from this stream")
        after = int(last_event_id)
    return StreamingResponse(stream_events(services, job, after), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
