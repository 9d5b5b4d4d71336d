"""Request and response bodies of the HTTP API (one class per use)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.jobs import Job

OutputFormat = Literal["png", "jpeg", "webp"]


class JobRequest(BaseModel):
    """The form fields of ``POST /v1/jobs`` beside ``file``."""

    model_config = ConfigDict(extra="forbid")

    scale: int | None = Field(None, ge=1, le=8, description="output size / input size; default: the model's")
    model: str | None = Field(None, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+(:[A-Za-z0-9_.\-]+)?$",
                              description="model name or name:version; default: the active model")
    format: OutputFormat | None = Field(None, description="output format; default: the input's family")
    quality: int = Field(95, ge=1, le=100, description="JPEG/WebP quality; WebP 100 is lossless")

    @field_validator("format", mode="before")
    @classmethod
    def _format_alias(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower()
            return {"jpg": "jpeg", "": None}.get(value, value)
        return value

    @field_validator("scale", "model", mode="before")
    @classmethod
    def _blank_is_default(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody


class ImageOut(BaseModel):
    width: int
    height: int
    format: str | None = None
    mode: str | None = None
    bytes: int | None = None
    media_type: str | None = None
    filename: str | None = None


class ModelRefOut(BaseModel):
    name: str
    version: str | None = None
    scale: int | None = None
    backend: str | None = None


class JobLinks(BaseModel):
    self: str
    result: str


class JobOut(BaseModel):
    id: str
    status: Literal["queued", "running", "succeeded", "failed", "canceled"]
    progress: float = Field(ge=0, le=1)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expires_at: datetime | None = None
    attempts: int
    cancel_requested: bool = False
    input: ImageOut | None = None
    output: ImageOut | None = None
    params: dict[str, object] = Field(default_factory=dict)
    model: ModelRefOut | None = None
    timings: dict[str, float] | None = None
    warnings: list[str] = Field(default_factory=list, description="what was dropped or changed, e.g. "
                                "EXIF metadata that could not be written back")
    error: ErrorBody | None = None
    links: JobLinks

    @classmethod
    def from_job(cls, job: Job, prefix: str = "/v1/jobs") -> JobOut:
        def ts(value: float | None) -> datetime | None:
            return datetime.fromtimestamp(value, timezone.utc) if value is not None else None

        output = None
        if job.output and job.status == "succeeded":
            output = ImageOut(**{k: v for k, v in job.output.items() if k in ImageOut.model_fields},
                              filename=download_name(job))
        return cls(
            id=job.id, status=job.status, progress=min(max(job.progress, 0.0), 1.0),
            created_at=ts(job.created_at), started_at=ts(job.started_at), finished_at=ts(job.finished_at),
            expires_at=ts(job.expires_at), attempts=job.attempts, cancel_requested=job.cancel_requested,
            input=ImageOut(**job.input) if job.input else None, output=output, params=job.params,
            model=ModelRefOut(**job.model) if job.model else None, timings=job.timings, warnings=job.warnings,
            error=ErrorBody(**job.error) if job.error else None,
            links=JobLinks(self=f"{prefix}/{job.id}", result=f"{prefix}/{job.id}/result"),
        )


def download_name(job: Job) -> str:
    stem = str(job.input.get("filename") or "image").rsplit(".", 1)[0] or "image"
    scale = (job.model or {}).get("scale") if not job.params.get("scale") else job.params["scale"]
    ext = (job.output or {}).get("ext", "png")
    return f"{stem}_x{scale}.{ext}" if scale else f"{stem}_sr.{ext}"


class ModelOut(BaseModel):
    """One model version (the same fields as ``srgan models --json``)."""

    name: str
    version: str
    ref: str = Field(description="name:version, what POST /v1/jobs takes as `model` to pin this version")
    scale: int | None
    active: bool = Field(description="the version a job naming only the model runs")
    default: bool = Field(False, description="the version a job naming no model runs")
    metrics: dict[str, float] = Field(default_factory=dict, description="measured quality (PSNR/SSIM on Y)")
    source: Literal["registry", "file"] = "registry"
    published_at: str | None = None
    sha256: str | None = None


class ModelsOut(BaseModel):
    models: list[ModelOut]


class CheckOut(BaseModel):
    ok: bool
    detail: str


class ReadyOut(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, CheckOut]


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"
