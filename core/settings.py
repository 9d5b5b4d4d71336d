"""The one configuration object. Every value can be set with an ``SRGAN_`` environment variable."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SRGAN_", env_file=".env", extra="ignore")

    environment: Literal["development", "production"] = "development"

    # --- files -----------------------------------------------------------
    data_dir: Path = Field(Path(".srgan"), description="jobs' files, the embedded Redis, the registry")
    models_dir: Path | None = Field(None, description="model registry; default <data_dir>/models")

    # --- model and engine --------------------------------------------------
    model: str = Field("srresnet_x4", description="default model: a registry name, name:version, or a .onnx path")
    backend: Literal["auto", "onnxruntime", "openvino"] = "auto"
    providers: list[str] | None = Field(
        None, description="ONNX Runtime providers in order, e.g. [\"CUDAExecutionProvider\"]; default: the best available"
    )
    threads: int = Field(0, ge=0, description="inference threads; 0 = one per physical core")
    # 256/8 meets every engine goal at once on a 2-core CPU with OpenVINO (bench/engine.py, README):
    # tiled >= 0.9x whole-image throughput, seams > 100 dB, 2048x2048 input in 1.24 GB.
    tile: int = Field(256, ge=0, description="tile size in input pixels; 0 = whole image")
    overlap: int = Field(8, ge=0, description="context pixels on each interior tile side")
    tile_batch: int = Field(1, ge=1, description="tiles per session call")
    model_refresh_s: float = Field(
        30.0, gt=0, description="workers re-read the registry's active versions at least this often, even "
        "when no change was announced on Redis"
    )

    # --- input limits -----------------------------------------------------
    max_input_pixels: int = Field(16_000_000, ge=1, description="largest input image, width x height")
    max_output_pixels: int = Field(256_000_000, ge=1, description="largest output image, width x height")
    max_upload_bytes: int = Field(50 * 2**20, ge=1, description="largest accepted upload (413 beyond it)")
    max_form_fields: int = Field(16, ge=1, description="most multipart parts in one upload (422 beyond it)")
    upload_idle_timeout_s: float = Field(
        30.0, gt=0, description="an upload that sends nothing for this long is cut with 408 (its temp file removed)"
    )
    upload_min_rate_bytes_s: int = Field(
        4096, ge=0, description="an upload slower than this on average, once upload_rate_grace_s has passed, is "
        "cut with 408; 0 = no minimum rate"
    )
    upload_rate_grace_s: float = Field(10.0, ge=0, description="seconds an upload may take before its rate counts")

    # --- service: queue, jobs, storage -----------------------------------
    redis_url: str | None = Field(
        None, description="broker and job store; unset: `srgan serve` starts an embedded redis-server"
    )
    storage_dir: Path | None = Field(None, description="uploads and results; default <data_dir>/jobs")
    queue: str = Field("srgan", min_length=1, description="Celery queue the API sends jobs to")
    job_ttl_s: int = Field(24 * 3600, ge=1, description="seconds a job and its files are kept")
    max_queued_jobs: int = Field(1000, ge=1, description="queued jobs beyond which POST answers 429")
    sweep_interval_s: float = Field(300.0, gt=0, description="seconds between sweeps of expired jobs' files")
    api_keys: list[str] = Field(
        default_factory=list, description="accepted API keys (X-API-Key or Bearer); empty: no authentication"
    )
    host: str = Field("127.0.0.1", description="`srgan serve` address")
    port: int = Field(8000, ge=0, le=65535, description="`srgan serve` port")

    # --- workers ------------------------------------------------------------
    worker_concurrency: int = Field(1, ge=1, description="jobs one worker runs at once (each its own process)")
    max_attempts: int = Field(3, ge=1, description="deliveries of a job before it is failed (worker deaths)")
    soft_time_limit_s: float = Field(600.0, gt=0, description="a job is failed with `timeout` after this")
    time_limit_s: float = Field(660.0, gt=0, description="a job's process is killed after this")
    visibility_timeout_s: float = Field(
        900.0, gt=0, description="unacknowledged jobs are redelivered after this; must exceed time_limit_s"
    )
    heartbeat_s: float = Field(5.0, gt=0, description="seconds between worker heartbeats (readiness)")
    cost_limit_factor: float = Field(
        1.0, ge=0, description="POST answers 422 too_expensive when a job's estimated engine time (its pixels over "
        "the fastest worker's measured throughput) exceeds this times soft_time_limit_s; 0 = no estimate"
    )
    throughput_max_age_s: float = Field(
        86400.0, gt=0, description="a worker's throughput measurement older than this is not used for estimates"
    )
    worker_lost_s: float | None = Field(
        None, gt=0, description="the API fails a running job with `worker_lost` once its worker has sent no "
        "heartbeat for this long; must exceed visibility_timeout_s (a dead worker's job is redelivered "
        "first); default 2 x visibility_timeout_s"
    )
    debug_tile_delay_s: float = Field(
        0.0, ge=0, description="testing aid: pause after each tile to widen failure windows; keep 0"
    )

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.tile and self.overlap >= self.tile:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than tile ({self.tile})")
        if not self.soft_time_limit_s < self.time_limit_s < self.visibility_timeout_s:
            raise ValueError(
                "time limits must satisfy soft_time_limit_s < time_limit_s < visibility_timeout_s, got "
                f"{self.soft_time_limit_s} < {self.time_limit_s} < {self.visibility_timeout_s}"
            )
        if self.worker_lost_s is not None and self.worker_lost_s <= self.visibility_timeout_s:
            raise ValueError(
                f"worker_lost_s ({self.worker_lost_s}) must exceed visibility_timeout_s ({self.visibility_timeout_s}), "
                "so a dead worker's job is redelivered before it is failed"
            )
        if self.resolved_worker_lost_s <= 2 * self.heartbeat_s:
            raise ValueError(
                f"worker_lost_s ({self.resolved_worker_lost_s}) must exceed two heartbeats (heartbeat_s={self.heartbeat_s})"
            )
        if self.environment == "production" and self.debug_tile_delay_s:
            raise ValueError("debug_tile_delay_s must be 0 in production")
        return self

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir if self.models_dir is not None else self.data_dir / "models"

    @property
    def resolved_worker_lost_s(self) -> float:
        """Seconds without a heartbeat after which a running job's worker counts as lost."""
        return self.worker_lost_s if self.worker_lost_s is not None else 2 * self.visibility_timeout_s

    @property
    def resolved_storage_dir(self) -> Path:
        return self.storage_dir if self.storage_dir is not None else self.data_dir / "jobs"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
