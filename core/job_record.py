"""A job record as stored: its fields, how they are read from the Redis hash, and the job ids.

``core.jobs.JobStore`` writes records (each move one Lua script: ``core.job_states``); the API shows
them (``api.results``) and workers run them (``worker.pipeline``).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from core.job_states import TERMINAL, Status
from core.sizing import OutputSize

JSON_FIELDS = ("input", "params", "model", "output", "error", "timings", "webhook", "source", "warnings",
               "resample")
DELIVERY_PREFIX = "webhook:"
"""``webhook:<event>`` fields hold the last delivery of each webhook event (JSON), one field per event
so deliveries running at once never overwrite each other's record."""


def new_job_id() -> str:
    return str(uuid.uuid4())


def is_job_id(value: str) -> bool:
    """True for the canonical form of a UUID (what :func:`new_job_id` makes)."""
    try:
        return str(uuid.UUID(value)) == value
    except (ValueError, AttributeError, TypeError):
        return False


@dataclass
class Job:
    """A job record as stored. ``input``/``params``/... are small JSON objects."""

    id: str
    status: Status
    progress: float = 0.0
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = None
    attempts: int = 0
    cancel_requested: bool = False
    worker: str | None = None
    owner: str | None = None
    """The name of the API key that made the job (``anonymous`` with authentication off); its jobs,
    batches and idempotency keys are the owner's alone."""
    input: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] | None = None
    output: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    timings: dict[str, float] | None = None
    deadline_at: float | None = None
    webhook: dict[str, Any] | None = None
    """``{"url": ..., "events": [...]}`` when the job has a webhook."""
    webhook_deliveries: dict[str, Any] | None = None
    """Per event: its last message ``{"id", "attempts", "last_status", "last_error", "state", ...}`` (workers)."""
    batch_id: str | None = None
    source: dict[str, Any] | None = None
    """``{"url": ...}`` for an image fetched from a URL."""
    seq: int = 0
    generation: int = 0
    """Counts the times the job was queued again (``core.recovery``); only a message of this generation runs it."""
    queued_at: float | None = None
    """When the job last entered the queue (made, or queued again)."""
    beat_at: float | None = None
    """The last heartbeat of the run of a ``running`` job (Redis time)."""
    warnings: list[str] = field(default_factory=list)
    """What was dropped or changed on the way (e.g. EXIF that could not be written back)."""
    eta_s: float | None = None
    """Seconds left of a running job's run, from its worker's measured speed (None when not running)."""
    resample: dict[str, Any] | None = None
    """How the model's output was resized to the asked size (``core.render.resampled``: ``model_scale``, ``size``,
    ``filter``); None while it has not run, or when the model's output is the result."""

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_hash(cls, job_id: str, raw: dict[str, str]) -> Job:
        def num(name: str) -> float | None:
            value = raw.get(name)
            return float(value) if value not in (None, "") else None

        parsed = {name: json.loads(raw[name]) for name in JSON_FIELDS if raw.get(name)}
        return cls(
            id=job_id,
            status=raw.get("status", "queued"),  # type: ignore[arg-type]
            progress=float(raw.get("progress") or 0.0),
            created_at=float(raw.get("created_at") or 0.0),
            started_at=num("started_at"),
            finished_at=num("finished_at"),
            expires_at=num("expires_at"),
            attempts=int(raw.get("attempts") or 0),
            cancel_requested=raw.get("cancel") == "1",
            worker=raw.get("worker") or None,
            owner=raw.get("owner") or None,
            input=parsed.get("input", {}),
            params=parsed.get("params", {}),
            model=parsed.get("model"),
            output=parsed.get("output"),
            error=parsed.get("error"),
            timings=parsed.get("timings"),
            deadline_at=num("deadline_at"),
            webhook=parsed.get("webhook"),
            webhook_deliveries={name[len(DELIVERY_PREFIX):]: json.loads(value) for name, value in raw.items()
                                if name.startswith(DELIVERY_PREFIX)} or None,
            batch_id=raw.get("batch_id") or None,
            source=parsed.get("source"),
            seq=int(raw.get("seq") or 0),
            generation=int(raw.get("generation") or 0),
            queued_at=num("queued_at"),
            beat_at=num("beat_at"),
            warnings=parsed.get("warnings") or [],
            eta_s=num("eta_s") if raw.get("status") == "running" else None,
            resample=parsed.get("resample"),
        )


def download_name(job: Job, ext: str | None = None) -> str:
    """The file name a job's result is downloaded under: ``<input stem>_<size>.<ext>``, the size as asked
    (``x4``, ``x2.5``, ``1920w``, ``1080h``, ``1920x1080``, ``max1600``: ``core.sizing.OutputSize.label``)."""
    stem = str(job.input.get("filename") or "image").rsplit(".", 1)[0] or "image"
    ext = ext or (job.output or {}).get("ext", "png")
    try:
        label = OutputSize.from_params(job.params).label((job.model or {}).get("scale"))
    except (ValueError, TypeError):  # not a size this version reads: the name stays usable
        label = "sr"
    return f"{stem}_{label}.{ext}"
