"""``/v1/batches``: several images in one request, one job each, followed and downloaded together."""

from __future__ import annotations

import asyncio
import json
import re
import time
import zipfile
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.admission import admit_batch
from api.batch_upload import discard_all, receive_batch
from api.deps import AcceptingCallerDep, CallerDep, Services, ServicesDep, owned, reject_unknown_query, require_api_key
from api.errors import ApiError
from api.events import KEEPALIVE_S, RETRY_MS
from api.openapi import AUTH, error_responses, form_fields
from api.results import job_out
from api.schemas import BatchLinks, BatchOut, JobOptions, JobRequest, download_name
from api.upload import Pace
from core.batches import Batch, BatchState, is_batch_id
from core.idempotency import MAX_KEY_LENGTH
from core.job_states import TERMINAL

router = APIRouter(prefix="/v1/batches", tags=["batches"],
                   dependencies=[Depends(require_api_key), Depends(reject_unknown_query)])

_ERRORS = error_responses(*AUTH, "not_found")
_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1,
                 "description": "the images, one `file` part each (at most max_batch_files)"},
        **form_fields(JobRequest, JobOptions, exclude=("url",)),
    }}}}}}


def batch_out(request: Request, services: Services, state: BatchState) -> BatchOut:
    prefix = f"/v1/batches/{state.batch.id}"
    return BatchOut(id=state.batch.id, status="completed" if state.finished else "running",
                    progress=round(state.progress, 4),
                    created_at=datetime.fromtimestamp(state.batch.created_at, timezone.utc),
                    counts=state.counts(), jobs=[job_out(request, services, job) for job in state.jobs],
                    links=BatchLinks(self=prefix, archive=f"{prefix}/archive", events=f"{prefix}/events"))


@router.post("", status_code=202, response_model=BatchOut, responses={
    200: {"model": BatchOut, "description": "an `Idempotency-Key` retry: the first request's batch"},
    202: {"headers": {"Location": {"description": "the batch's URL, `/v1/batches/{id}`",
                                   "schema": {"type": "string"}}}},
    **error_responses(*AUTH, "bad_multipart", "client_disconnected", "upload_timeout", "upload_too_large",
                      "unsupported_media_type", "too_many_fields", "too_many_files", "idempotency_conflict",
                      "idempotency_in_progress", "webhook_refused", "webhooks_disabled", "queue_full",
                      "quota_exceeded", "queue_unavailable", "storage_unavailable", "model_error", "no_worker")},
    openapi_extra=_BODY, summary="Upload several images, one job each")
async def create_batch(
    request: Request,
    response: Response,
    services: ServicesDep,
    caller: AcceptingCallerDep,
    idempotency_key: Annotated[str | None, Header(max_length=MAX_KEY_LENGTH, description="as on POST /v1/jobs")] = None,
    cancel_after: Annotated[str | None, Header(description="as on POST /v1/jobs, for every job")] = None,
) -> BatchOut:
    """Each `file` part becomes a job with the same parameters; a file that is not an image we read is a
    `failed` job in the list (the others still run). `Location` is the batch."""
    settings = services.settings
    queued = await run_in_threadpool(services.store.queued_count)
    if queued >= settings.max_queued_jobs:
        raise ApiError(429, "queue_full", f"{settings.max_queued_jobs} jobs are already waiting; try again later",
                       headers={"Retry-After": "10"})
    files, fields = await receive_batch(
        request, services.storage, allowed_fields=set(JobRequest.model_fields) | set(JobOptions.model_fields),
        max_bytes=settings.max_upload_bytes, max_total_bytes=settings.max_batch_bytes,
        max_parts=settings.max_batch_files + settings.max_form_fields, max_files=settings.max_batch_files,
        pace=Pace.of(settings))
    try:
        batch, replayed = await run_in_threadpool(admit_batch, services, files, fields, caller=caller,
                                                  idempotency_key=idempotency_key, cancel_after=cancel_after)
    finally:
        discard_all(files)
    response.headers["Location"] = f"/v1/batches/{batch.id}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
        response.status_code = 200
    return batch_out(request, services, await run_in_threadpool(services.batches.state, batch))


def _batch(services: ServicesDep, caller: CallerDep,
           batch_id: Annotated[str, Path(description="the batch's id")]) -> Batch:
    """The caller's batch: another key's batch is ``404`` exactly as an unknown id."""
    return owned(services.batches.get(batch_id) if is_batch_id(batch_id) else None, caller, "batch", batch_id)


BatchDep = Annotated[Batch, Depends(_batch)]


@router.get("/{batch_id}", response_model=BatchOut, responses=_ERRORS, summary="A batch: its jobs and progress")
def get_batch(request: Request, batch: BatchDep, services: ServicesDep) -> BatchOut:
    return batch_out(request, services, services.batches.state(batch))


async def _batch_stream(request: Request, services: Services, batch: Batch) -> AsyncIterator[str]:
    """A ``snapshot`` (the batch as GET shows it), then each job's events as ``job`` events until all ended."""
    yield f"retry: {RETRY_MS}\n\n"
    last = {job_id: 0 for job_id in batch.job_ids}

    def events_of(job_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        return {j: services.store.events_since(j, last[j]) for j in job_ids}

    with services.events.watch(*batch.job_ids) as changed:
        state = await run_in_threadpool(services.batches.state, batch)
        for job in state.jobs:
            last[job.id] = job.seq
        snapshot = batch_out(request, services, state).model_dump_json()
        yield f"event: snapshot\ndata: {snapshot}\n\n"
        done = {job.id for job in state.jobs if job.finished} | (set(batch.job_ids) - {j.id for j in state.jobs})
        while len(done) < len(batch.job_ids):
            changed.clear()
            pending = [job_id for job_id in batch.job_ids if job_id not in done]
            news = await run_in_threadpool(events_of, pending)
            for job_id, events in news.items():
                for event in events:
                    last[job_id] = int(event["seq"])
                    yield f"event: job\ndata: {json.dumps({'job_id': job_id, **event}, separators=(',', ':'))}\n\n"
                    if event["type"] == "status" and event["status"] in TERMINAL:
                        done.add(job_id)
            if len(done) == len(batch.job_ids):
                break
            try:
                await asyncio.wait_for(changed.wait(), timeout=KEEPALIVE_S)
            except asyncio.TimeoutError:
                yield ": keep-alive\n\n"
        final = batch_out(request, services, await run_in_threadpool(services.batches.state, batch))
        yield f"event: snapshot\ndata: {final.model_dump_json()}\n\n"


@router.get("/{batch_id}/events", response_class=StreamingResponse, summary="Live progress of a batch (SSE)",
            responses={200: {"content": {"text/event-stream": {}}, "description": (
                "`snapshot` events carry the whole batch (as GET shows it), first and last; in between, each "
                "change of one of its jobs is a `job` event: the job's event (as on /v1/jobs/{id}/events) "
                "with `job_id`. The stream ends once every job has ended; a reconnect starts with a new "
                "snapshot.")}, **_ERRORS})
async def batch_events(request: Request, batch: BatchDep, services: ServicesDep) -> StreamingResponse:
    return StreamingResponse(_batch_stream(request, services, batch), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


class _Sink:
    """A write-only file that hands what was written to a generator (zipfile streams into it)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.offset = 0

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        self.offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self.offset

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.chunks = b"".join(self.chunks), []
        return data


def _unique(name: str, used: set[str]) -> str:
    stem, dot, ext = name.rpartition(".")
    candidate, n = name, 1
    while candidate in used:
        n += 1
        candidate = f"{stem} ({n}).{ext}" if dot else f"{name} ({n})"
    used.add(candidate)
    return candidate


def _zip_time(finished_at: float | None) -> tuple[int, int, int, int, int, int]:
    """A zip entry's date and time (UTC; zip has no zone) for a job that finished at ``finished_at``."""
    at = time.gmtime(finished_at if finished_at is not None else time.time())
    return (max(at.tm_year, 1980), at.tm_mon, at.tm_mday, at.tm_hour, at.tm_min, at.tm_sec)


def _zip_results(services: Services, state: BatchState) -> Iterator[bytes]:
    sink, used = _Sink(), set[str]()
    # zipfile writes to any object with write, tell and flush; typeshed asks for a whole IO[bytes]
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as archive:  # type: ignore[call-overload]
        for job in state.jobs:
            if job.status != "succeeded":
                continue
            stored = services.storage.open_result(job.id, str((job.output or {}).get("ext", "png")))
            if stored is None:
                continue
            entry = zipfile.ZipInfo(_unique(re.sub(r"[/\\]", "_", download_name(job)), used),
                                    _zip_time(job.finished_at))  # not 1980-01-01, zipfile's default
            with archive.open(entry, "w") as dst:
                for block in stored.chunks():
                    dst.write(block)
                    yield sink.take()
            yield sink.take()
    yield sink.take()


@router.get("/{batch_id}/archive", response_class=StreamingResponse, summary="A zip of the batch's results",
            responses={200: {"content": {"application/zip": {}}, "description": "the results of the succeeded "
                                                                                 "jobs, under their download names"},
                       **error_responses(*AUTH, "not_found", "nothing_ready")})
def get_archive(batch: BatchDep, services: ServicesDep) -> StreamingResponse:
    """Streams the results finished so far (ask again once `status` is `completed` for all of them);
    `409 nothing_ready` while no job has succeeded yet."""
    state = services.batches.state(batch)
    if not any(job.status == "succeeded" for job in state.jobs):
        raise ApiError(409, "nothing_ready", "no job of this batch has a result yet", headers={"Retry-After": "1"})
    return StreamingResponse(_zip_results(services, state), media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="batch-{batch.id[:8]}.zip"'})
