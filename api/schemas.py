"""Request and response bodies of the HTTP API (one class per use)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from core.job_record import Job, download_name
from core.sizing import MAX_SCALE, MIN_SCALE, OutputSize

OutputFormat = Literal["png", "jpeg", "webp", "avif"]
DENOISE_PATTERN = r"^(auto|0(\.[0-9]{1,6})?|1(\.0{1,6})?|\.[0-9]{1,6})$"
"""What a ``denoise`` form field may say: ``auto`` or a number 0..1 (a form part is text)."""


class JobRequest(BaseModel):
    """The form fields of ``POST /v1/jobs`` beside ``file``."""

    model_config = ConfigDict(extra="forbid")

    scale: float | None = Field(
        None, ge=MIN_SCALE, le=MAX_SCALE, allow_inf_nan=False,
        description="output size / input size, 1 to 8, fractional too (2.5); the result is round(w * scale) x "
                    "round(h * scale); default: the model's. Not with width, height or max_side")
    width: int | None = Field(None, ge=1, description="the result's width in pixels, the height from the aspect "
                              "ratio; with height: fit inside width x height, aspect kept")
    height: int | None = Field(None, ge=1, description="the result's height in pixels, the width from the aspect "
                               "ratio; with width: fit inside width x height, aspect kept")
    max_side: int | None = Field(None, ge=1, description="the result's longer side in pixels, aspect kept; "
                                 "not with width or height. A size must need a scale from 1 to 8 of the image")
    model: str | None = Field(None, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+(:[A-Za-z0-9_.\-]+)?$",
                              description="model name or name:version, or a family's name (realworld: "
                                          "realworld_x2 or realworld_x4, whichever the asked size needs); default: "
                                          "the configured default, or the smallest model reaching the asked scale")
    format: Annotated[OutputFormat | None, WithJsonSchema(
        {"anyOf": [{"type": "string", "enum": ["png", "jpeg", "jpg", "webp", "avif"]}, {"type": "null"}]}
    )] = Field(None, description="output format (`jpg` is `jpeg`); default: the input's family")
    quality: int = Field(95, ge=1, le=100, description="JPEG/WebP/AVIF quality; WebP 100 is lossless")
    detail: float | None = Field(
        None, ge=0, le=1,
        description="for a GAN model with a detail base (srgan_x4): 0 = its PSNR model (faithful, smooth), "
                    "1 = the GAN model (textured), between: their weights interpolated (rounded to 0.05); "
                    "default: the model as it is",
    )
    denoise: Annotated[Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | Literal["auto"] | None,
                       WithJsonSchema({"anyOf": [{"type": "string", "pattern": DENOISE_PATTERN}, {"type": "null"}]})
                       ] = Field(
        None,
        description="for a real-world restoration model (one whose card names a denoise_base): how much of the "
                    "upload's JPEG blocks, noise and blur to remove: 0 = its clean model (keeps everything in the "
                    "input), 1 = the strongest restoration it was trained for, between: their weights interpolated "
                    "(rounded to 0.05); `auto` (the default) estimates it from the upload's JPEG quality and noise "
                    "(a clean image gets 0); the job's `model.denoise` says the value and why",
    )

    @field_validator("format", mode="before")
    @classmethod
    def _format_alias(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower()
            return {"jpg": "jpeg", "": None}.get(value, value)
        return value

    @field_validator("denoise", mode="before")
    @classmethod
    def _denoise_word(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) and value.strip().lower() == "auto" else value

    @field_validator("scale", "width", "height", "max_side", "model", "detail", "denoise", mode="before")
    @classmethod
    def _blank_is_default(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    def output_size(self) -> OutputSize:
        """The asked size; ``InvalidParameter`` (naming the field) for scale with a size, or max_side with
        width or height."""
        return OutputSize.checked(scale=self.scale, width=self.width, height=self.height, max_side=self.max_side)


class JobOptions(BaseModel):
    """The form fields of ``POST /v1/jobs`` about the job rather than the image: when it ends, who is told."""

    model_config = ConfigDict(extra="forbid")

    deadline: str | None = Field(None, max_length=64, description="end the job if it has not finished by "
                                 "then: a duration (90s, 5m, 1h) or an ISO 8601 time with a zone; not started "
                                 "by then: `aborted`, running: `canceled` at its next tile (like Cancel-After)")
    url: str | None = Field(None, max_length=1000, description="instead of `file`: an http(s) URL of the image; "
                            "the server fetches it with the limits of an upload (bytes, pixels, type), a "
                            "timeout and re-checked redirects; loopback and private addresses are refused")
    webhook: str | None = Field(None, max_length=1000, description="http(s) URL the workers POST the job's events "
                                "to (Standard Webhooks, signed); loopback and private addresses are refused "
                                "unless SRGAN_OUTBOUND_ALLOW names them")
    webhook_events: str | None = Field(None, max_length=100, description="comma-separated: `started`, `progress`, "
                                       "`completed` (default `completed`: the job ended, whatever its status)")

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @classmethod
    def split(cls, fields: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        """``(image fields, job option fields)`` of a form."""
        mine = {k: v for k, v in fields.items() if k in cls.model_fields}
        return {k: v for k, v in fields.items() if k not in cls.model_fields}, mine


class ErrorBody(BaseModel):
    code: str
    message: str


class ImageOut(BaseModel):
    width: int | None = Field(None, description="absent only for a batch file that was not an image we read")
    height: int | None = Field(None, description="width and height as the image is displayed: for an input, "
                               "after its EXIF orientation is applied")
    orientation: int | None = Field(None, description="input only: the EXIF orientation applied on reading "
                                    "(1 = none, 3 = half turn, 6 and 8 = quarter turns, 2/4/5/7 mirrored)")
    format: str | None = None
    mode: str | None = None
    bit_depth: int | None = Field(None, description="bits per channel: 16 for a 16-bit PNG or TIFF input, and for "
                                  "its result when written as PNG (another output format holds 8: the job's "
                                  "warnings say so)")
    bytes: int | None = None
    media_type: str | None = None
    filename: str | None = None


class DenoiseOut(BaseModel):
    value: float = Field(description="0 (the clean model) .. 1 (the strongest restoration)")
    from_: str = Field(alias="from", description="why: `asked`, or `auto: jpeg q58, noise 3.1`")

    model_config = ConfigDict(populate_by_name=True)


class ResampleOut(BaseModel):
    model_scale: int = Field(description="the scale of the model that ran: its output, model_scale times the "
                             "input, was resized to `size`")
    size: list[int] = Field(min_length=2, max_length=2, description="[width, height] of the result")
    filter: Literal["lanczos"] = Field(description="the resampling filter (antialiased when it shrinks)")


class ModelRefOut(BaseModel):
    name: str
    version: str | None = None
    scale: int | None = None
    backend: str | None = None
    precision: str | None = Field(None, description="the arithmetic precision the job ran in: f32, bf16, f16 or int8 "
                                  "(SRGAN_PRECISION; tiles that came out NaN or blank were re-run in f32)")
    detail: float | None = Field(None, description="the detail the job ran at (GAN models with a detail base)")
    detail_base: str | None = Field(None, description="name:version of the PSNR model blended in for detail")
    detail_target: str | None = Field(None, description="name:version of the GAN model blended for detail")
    denoise: DenoiseOut | None = Field(None, description="the denoise strength the job ran at and why (models "
                                       "with a denoise base)")
    denoise_base: str | None = Field(None, description="name:version of the clean model blended in for denoise")


class JobLinks(BaseModel):
    self: str
    result: str
    events: str = Field(description="Server-Sent Events stream of the job's status and progress")
    share: str | None = Field(None, description="a signed link to the result that needs no API key "
                              "(succeeded jobs only); valid until share_expires_at")
    share_expires_at: datetime | None = None


class WebhookDeliveryOut(BaseModel):
    id: str = Field(description="the message's webhook-id, the same on every retry")
    state: Literal["pending", "retrying", "delivered", "failed", "refused"]
    attempts: int
    last_status: int | None = Field(None, description="HTTP status of the last attempt's answer")
    last_error: str | None = None


class WebhookOut(BaseModel):
    url: str
    events: list[str]
    deliveries: dict[str, WebhookDeliveryOut] = Field(
        default_factory=dict, description="the last message of each event sent so far")


class JobOut(BaseModel):
    id: str
    status: Literal["queued", "running", "succeeded", "failed", "canceled", "aborted"] = Field(
        description="`aborted`: its deadline passed before it started, it never ran; `canceled`: stopped by "
        "DELETE, or by its deadline while running")
    progress: float = Field(ge=0, le=1)
    eta_s: float | None = Field(None, ge=0, description="running jobs: estimated seconds until the result, from "
                                "the tiles per second this worker measured on this job (before its first tiles: "
                                "its recorded speed for the model); null otherwise")
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expires_at: datetime | None = None
    attempts: int
    cancel_requested: bool = False
    owner: str | None = Field(None, description="the name of the API key that made the job (never the key)")
    input: ImageOut | None = None
    output: ImageOut | None = None
    params: dict[str, object] = Field(default_factory=dict)
    model: ModelRefOut | None = None
    resample: ResampleOut | None = Field(None, description="how the model's output was resized to the asked scale "
                                         "or size; null when the model's output is the result (or before the "
                                         "job has run)")
    timings: dict[str, float] | None = None
    warnings: list[str] = Field(default_factory=list, description="what was dropped or changed, e.g. "
                                "EXIF metadata that could not be written back")
    error: ErrorBody | None = None
    deadline_at: datetime | None = None
    webhook: WebhookOut | None = None
    source: dict[str, str] | None = Field(None, description="`{\"url\": ...}` for an image fetched from a URL")
    batch_id: str | None = None
    links: JobLinks

    @classmethod
    def from_job(cls, job: Job, prefix: str = "/v1/jobs", share: tuple[str, int] | None = None) -> JobOut:
        """``share``: the signed result link and its expiry, for a succeeded job."""
        def ts(value: float | None) -> datetime | None:
            return datetime.fromtimestamp(value, timezone.utc) if value is not None else None

        output = None
        if job.output and job.status == "succeeded":
            output = ImageOut(**{k: v for k, v in job.output.items() if k in ImageOut.model_fields},
                              filename=download_name(job))
        return cls(
            id=job.id, status=job.status, progress=min(max(job.progress, 0.0), 1.0),
            eta_s=max(job.eta_s, 0.0) if job.eta_s is not None else None,
            created_at=datetime.fromtimestamp(job.created_at, timezone.utc), started_at=ts(job.started_at),
            finished_at=ts(job.finished_at),
            expires_at=ts(job.expires_at), attempts=job.attempts, cancel_requested=job.cancel_requested,
            owner=job.owner,
            input=ImageOut(**job.input) if job.input else None, output=output, params=job.params,
            model=ModelRefOut(**job.model) if job.model else None,
            resample=ResampleOut(**job.resample) if job.resample and job.status == "succeeded" else None,
            timings=job.timings, warnings=job.warnings,
            error=ErrorBody(**job.error) if job.error else None, deadline_at=ts(job.deadline_at),
            webhook=WebhookOut(url=job.webhook["url"], events=job.webhook.get("events", []),
                               deliveries={k: WebhookDeliveryOut.model_validate(v, strict=False)
                                           for k, v in (job.webhook_deliveries or {}).items()})
            if job.webhook else None,
            source=job.source, batch_id=job.batch_id,
            links=JobLinks(self=f"{prefix}/{job.id}", result=f"{prefix}/{job.id}/result",
                           events=f"{prefix}/{job.id}/events",
                           share=share[0] if share and job.status == "succeeded" else None,
                           share_expires_at=ts(share[1]) if share and job.status == "succeeded" else None),
        )


class JobListOut(BaseModel):
    jobs: list[JobOut] = Field(description="the calling key's jobs, newest first")
    limit: int
    offset: int


class TilingOut(BaseModel):
    """What a model needs from the tiling (its contract's ``tiling``; ``srgan import`` sets it for Real-ESRGAN's)."""

    min_overlap: int = Field(description="the least context (input pixels) each tile gets; the engine uses the "
                                         "larger of this and SRGAN_OVERLAP")
    pre_pad: int = Field(description="input pixels reflected around the whole image before the model and cropped "
                                     "off its output, as Real-ESRGAN's own inference does")


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
    detail_base: str | None = Field(
        None, description="the PSNR model this GAN model blends with for `detail` (null: no detail control)"
    )
    denoise_base: str | None = Field(
        None, description="the clean model this real-world model blends with for `denoise` (null: no denoise control)"
    )
    tiling: TilingOut | None = Field(None, description="what the model needs from the tiling (null: nothing; "
                                     "the configured tile overlap as it is)")
    precision: str | None = Field(
        None, description="the arithmetic precision (f32, bf16, f16, int8) a worker last loaded this version in; "
        "null: no worker has loaded it yet. Each job's record says what it ran in (model.precision)"
    )
    precision_note: str | None = Field(None, description="how that precision was chosen (`auto`'s check)")
    int8: dict[str, Any] | None = Field(
        None, description="what the model card records of int8 for this version: the quantization scheme, its "
        "calibration, the Y-PSNR cost against f32 on Set5/Set14 (mean and worst image) and where it was measured"
    )


class ModelsOut(BaseModel):
    models: list[ModelOut]
    precision: str = Field("auto", description="the configured precision (SRGAN_PRECISION): auto, f32, bf16, f16, int8")


class CheckOut(BaseModel):
    ok: bool
    detail: str


class ReadyOut(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, CheckOut]


class HealthOut(BaseModel):
    status: Literal["ok", "failing"] = "ok"
    detail: str | None = None


class BatchLinks(BaseModel):
    self: str
    archive: str = Field(description="a zip of the results of the batch's succeeded jobs")
    events: str = Field(description="Server-Sent Events: the batch, then each change of its jobs")


class BatchOut(BaseModel):
    id: str
    status: Literal["running", "completed"] = Field(description="`completed` once every job has ended")
    progress: float = Field(ge=0, le=1, description="mean over the jobs; an ended job counts as 1")
    created_at: datetime
    counts: dict[str, int] = Field(description="jobs per status")
    jobs: list[JobOut] = Field(description="one per uploaded file, in upload order; a file that could not be "
                               "read is a `failed` job with its error")
    links: BatchLinks
