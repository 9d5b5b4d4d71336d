"""The one configuration object. Every value can be set with an ``SRGAN_`` environment variable."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import ByteSize, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ANONYMOUS = "anonymous"
"""The caller's name when authentication is off (``api_keys`` empty)."""

_HASH_PREFIX = "sha256:"
_HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_KEY_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def hash_api_key(key: str) -> str:
    """The form an API key is stored and compared in: ``sha256:<64 hex digits>``."""
    return _HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def check_key_name(name: object) -> str:
    """An API key's name, or ValueError: it shows in logs and job records, so it is kept plain."""
    if not isinstance(name, str) or not _KEY_NAME_RE.match(name) or name == ANONYMOUS:
        raise ValueError(f"API key name {name!r}: 1-64 letters, digits, '_', '.', '-', and not {ANONYMOUS!r}")
    return name


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def user_data_dir() -> Path:
    """The per-user data folder, the default ``data_dir``: the same registry from any working directory.

    ``$XDG_DATA_HOME/srgan`` (default ``~/.local/share/srgan``) on Linux,
    ``~/Library/Application Support/srgan`` on macOS, ``%LOCALAPPDATA%\\srgan`` on Windows.
    """
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "srgan"
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "srgan"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "srgan"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SRGAN_", env_file=".env", extra="ignore")

    environment: Literal["development", "production"] = "development"

    # --- files -----------------------------------------------------------
    data_dir: Path = Field(default_factory=user_data_dir,
                           description="jobs' files, the embedded Redis, the registry; default the per-user data "
                                       "folder (~/.local/share/srgan)")
    models_dir: Path | None = Field(None, description="model registry; default <data_dir>/models")
    compile_cache: bool = Field(
        True, description="keep compiled networks (OpenVINO's cache, ONNX Runtime's optimized model) and precision "
        "auto's decision in cache_dir, keyed by network, runtime and CPU: the next start on this machine skips them")
    cache_dir: Path | None = Field(None, description="the compile cache; default <data_dir>/cache")

    # --- model and engine --------------------------------------------------
    model: str = Field("srresnet_x4", description="default model: a registry name, name:version, or a .onnx path")
    backend: Literal["auto", "onnxruntime", "openvino"] = "auto"
    providers: list[str] | None = Field(
        None,
        description="ONNX Runtime providers in order, e.g. [\"CUDAExecutionProvider\"]; default: the best available"
    )
    threads: int = Field(0, ge=0, description="inference threads; 0 = one per physical core")
    precision: Literal["auto", "f32", "bf16", "f16", "int8"] = Field(
        "auto", description="arithmetic precision: auto = int8 under OpenVINO on a CPU with AMX-INT8, VNNI or "
        "AVX2 when it costs at most 0.05 dB (0.15 on the worst image) on its probe images (with the compile cache "
        "only), else the fastest the device runs natively (bf16 on a CPU with AMX or AVX512-BF16 under OpenVINO, "
        "f16 on a GPU), kept only when it matches float32 on a probe image (>= 50 dB), else f32; f32, bf16 "
        "(OpenVINO), f16, int8 (a CPU with AMX-INT8 or VNNI; AVX2 under OpenVINO) force one"
    )
    # auto/8 with the default budget: tiles of ~260 px for a 2048x2048 input, peak RSS under 1.5 GB,
    # seams > 50 dB (bench/engine.py, bench/README.md).
    tile: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        "auto", description="tile size in input pixels; 0 = whole image; auto = the tile plan that runs the "
        "fewest pixels (tiles not necessarily square) whose working memory fits memory_budget (the whole image "
        "when it fits; on a CPU, windows of at most 272x272 input pixels, which run faster there, except OpenVINO "
        "f32)"
    )
    memory_budget: ByteSize | None = Field(
        None, description="working memory tile=auto sizes tiles by, in bytes or with a unit (\"800MB\", "
        "\"2GiB\"); default: a quarter of the available memory, at most 1 GiB; on a GPU, half its free memory "
        "(nvidia-smi) for the network, the output strips within the host default. A tile that still runs out of "
        "memory is split and retried"
    )
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
    max_batch_files: int = Field(50, ge=1, description="most files in one batch (POST /v1/batches)")
    max_batch_bytes: int = Field(200 * 2**20, ge=1, description="largest batch upload in all (413 beyond it)")
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
    redis_password: SecretStr | None = Field(
        None, description="Redis's password, put into redis_url (which then names the user only, e.g. "
        "redis://srgan@srgan-redis:6379/0): a URL in a ConfigMap, the password in a Secret"
    )
    storage_dir: Path | None = Field(None, description="uploads and results; default <data_dir>/jobs")
    storage_url: str = Field(
        "", description="where jobs' inputs and results are kept: empty, a path or file:///path = a local folder "
        "(storage_dir); s3://bucket/prefix = an S3-compatible object store shared by the API and workers on any "
        "host (credentials the usual boto3 way: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, a role)"
    )
    s3_endpoint_url: str | None = Field(
        None, description="the S3 API's address for a server other than AWS (SeaweedFS, MinIO, Garage, Ceph RGW), "
        "e.g. http://objectstore:8333; path-style addressing is used with it"
    )
    s3_region: str | None = Field(None, description="the bucket's region; unset: boto3's default (AWS_REGION...)")
    s3_presign_links: bool = Field(
        False, description="signed result links (/v1/links/...) redirect to a presigned object URL, so the bytes "
        "come straight from the store; only when clients can reach s3_public_endpoint_url (or the store's address)"
    )
    s3_public_endpoint_url: str | None = Field(
        None, description="the store's address as clients see it, for presigned links; default s3_endpoint_url"
    )
    queue: str = Field("srgan", min_length=1, description="Celery queue the API sends jobs to")
    job_ttl_s: int = Field(24 * 3600, ge=1, description="seconds a job and its files are kept")
    max_queued_jobs: int = Field(1000, ge=1, description="queued jobs beyond which POST answers 429")
    sweep_interval_s: float = Field(300.0, gt=0, description="seconds between sweeps of expired jobs' files")
    api_keys: dict[str, str] = Field(
        default_factory=dict,
        description="API keys by name, each the key's hash `sha256:<hex>` (`srgan key NAME` makes one) or the key "
        "itself: {\"alice\": \"sha256:...\"}; a JSON list of keys is taken too (named key-<8 hex digits of "
        "the hash>). Jobs belong to the name. Empty: no authentication",
    )
    rate_limit_per_minute: int = Field(
        600, ge=0, description="requests per minute each API key may make to /v1 (a burst of that many, refilled "
        "evenly); 429 rate_limited beyond it; 0: no limit. Not applied with authentication off"
    )
    key_max_queued_jobs: int = Field(
        100, ge=0, description="queued jobs each API key may have at once; 429 quota_exceeded beyond it; 0: no limit"
    )
    key_max_pixels_per_hour: int = Field(
        0, ge=0, description="input pixels each API key may submit per hour (refilled evenly); 429 quota_exceeded "
        "beyond it; 0: no limit"
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="origins allowed to call the API from a browser (CORS), e.g. "
        "[\"https://app.example.com\"]; empty: no CORS headers at all"
    )
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Host header values the API answers (DNS-rebinding guard), e.g. "
        "[\"sr.example.com\"], \"*.example.com\" for subdomains; empty: the loopback names when bound to "
        "loopback, and `srgan serve` beyond loopback refuses to start without it (unless --insecure)"
    )
    dependency_grace_s: float = Field(
        60.0, gt=0, description="/healthz fails (503) once Redis has not answered for this long, so a supervisor "
        "restarts the API; shorter outages only fail /readyz"
    )
    idempotency_ttl_s: int = Field(24 * 3600, ge=1, description="seconds an Idempotency-Key is remembered")
    max_wait_s: float = Field(60.0, ge=0, le=600, description="longest `Prefer: wait=N` honoured on POST /v1/jobs")
    public_url: str | None = Field(
        None, description="the service's address as clients see it (https://sr.example.com); makes signed "
        "links and webhook payloads absolute. Unset: the API uses the request's own address, workers relative links"
    )
    link_secret: SecretStr | None = Field(
        None, description="key that signs shareable result links; unset: a random one kept in Redis "
        "(srgan:link-secret), shared by every API replica and worker"
    )
    link_ttl_s: int = Field(3600, ge=1, description="lifetime of a signed result link")
    webhook_secret: SecretStr | None = Field(
        None, description="Standard Webhooks signing secret (whsec_<base64>); unset: jobs with a webhook are "
        "refused (422 webhooks_disabled)"
    )
    webhook_timeout_s: float = Field(10.0, gt=0, description="connect and read timeout of one webhook delivery")
    webhook_backoff_s: float = Field(5.0, gt=0, description="wait before the first webhook retry; doubles "
                                     "each time, at most webhook_backoff_max_s")
    webhook_backoff_max_s: float = Field(600.0, gt=0, description="longest wait between two webhook "
                                         "retries (and at most half of visibility_timeout_s)")
    webhook_retry_window_s: float = Field(3600.0, ge=0, description="a failing webhook is retried until this "
                                          "long after its first try")
    webhook_progress_every_s: float = Field(1.0, ge=0, description="at most one `progress` webhook this often")
    webhook_queue: str = Field("srgan-webhooks", min_length=1, description="Celery queue of webhook deliveries")
    outbound_allow: list[str] = Field(
        default_factory=list, description="hosts or networks (CIDR) that webhooks and URL inputs may reach "
        "although they are loopback, private or link-local (refused otherwise)"
    )
    fetch_timeout_s: float = Field(10.0, gt=0, description="connect and read timeout when fetching a `url` input")
    fetch_max_redirects: int = Field(3, ge=0, description="redirects followed when fetching a `url` input")
    host: str = Field("127.0.0.1", description="`srgan serve` address")
    port: int = Field(8000, ge=0, le=65535, description="`srgan serve` port")
    http_idle_timeout_s: float = Field(
        5.0, gt=0, description="a connection that sends no byte of a request for this long (after it opens, or "
        "after its previous answer) is closed"
    )
    http_header_timeout_s: float = Field(
        10.0, gt=0, description="a connection whose request line and headers are not complete this long after it "
        "opens (or after its previous answer) is closed, however slowly the bytes trickle in"
    )
    http_max_connections: int = Field(
        1000, ge=1, description="open connections the API keeps at most; a new one beyond it closes the "
        "connection that has waited longest for a request, or is refused when all are busy (lowered to fit the "
        "process's file descriptor limit)"
    )
    insecure: bool = Field(
        False, description="`uvicorn --factory api.main:create_app` beyond loopback without API keys or a host "
        "allow-list: answer anyway (the same as `srgan serve --insecure`); refused with 503 otherwise"
    )

    # --- workers ------------------------------------------------------------
    worker_concurrency: int = Field(1, ge=1, description="jobs one worker runs at once (each its own process)")
    max_attempts: int = Field(3, ge=1, description="deliveries of a job before it is failed (worker deaths)")
    soft_time_limit_s: float = Field(600.0, gt=0, description="a job is failed with `timeout` after this")
    time_limit_s: float = Field(660.0, gt=0, description="a job's process is killed after this")
    visibility_timeout_s: float = Field(
        900.0, gt=0, description="unacknowledged jobs are redelivered after this; must exceed time_limit_s"
    )
    heartbeat_s: float = Field(
        5.0, gt=0, description="seconds between worker heartbeats (readiness) and between the heartbeats of each "
        "running job (recovery)"
    )
    cost_limit_factor: float = Field(
        1.0, ge=0, description="POST answers 422 too_expensive when a job's estimated engine time (its pixels over "
        "the fastest worker's measured throughput) exceeds this times soft_time_limit_s; 0 = no estimate"
    )
    throughput_max_age_s: float = Field(
        86400.0, gt=0, description="a worker's throughput measurement older than this is not used for estimates"
    )
    worker_lost_s: float = Field(
        20.0, gt=0, description="a running job whose run has sent no heartbeat for this long is presumed lost with "
        "its worker and queued again (a new attempt; failed with attempts_exhausted once max_attempts are used); "
        "must exceed two heartbeats (heartbeat_s)"
    )
    message_lost_s: float = Field(
        20.0, gt=0, description="a job queued this long whose message is in neither the broker's queue nor a "
        "worker's hands is sent again"
    )
    reaper_interval_s: float = Field(
        5.0, gt=0, description="seconds between passes of the reaper that does both (it runs in every worker and "
        "the API, one pass at a time across all of them)"
    )
    worker_restart_budget: int = Field(
        5, ge=1, description="`srgan serve` restarts a worker that dies at most this many times within "
        "worker_restart_window_s; beyond it the worker waits for the window to free a restart (uploads get 503 "
        "while no worker runs) and is then restarted again: never given up for good"
    )
    worker_restart_window_s: float = Field(600.0, gt=0, description="the window of worker_restart_budget")
    worker_restart_backoff_max_s: float = Field(
        30.0, ge=0, description="longest wait before restarting a dead worker: 1 s after a death, doubled for "
        "each earlier restart still inside the window"
    )
    debug_tile_delay_s: float = Field(
        0.0, ge=0, description="testing aid: pause after each tile to widen failure windows; keep 0"
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _hash_api_keys(cls, value: Any) -> Any:
        """Keep only hashes: a plain key is hashed at once; a list gets names from the hashes."""
        if isinstance(value, (list, tuple)):
            value = {f"key-{cls._as_hash(k)[len(_HASH_PREFIX):][:8]}": k for k in value}
        if not isinstance(value, dict):
            return value
        hashed: dict[str, str] = {}
        for name, key in value.items():
            check_key_name(name)
            if not isinstance(key, str) or not key.strip():
                raise ValueError(f"API key {name!r} is empty")
            hashed[name] = cls._as_hash(key.strip())
        dupes = {h for h in hashed.values() if list(hashed.values()).count(h) > 1}
        if dupes:
            names = sorted(n for n, h in hashed.items() if h in dupes)
            raise ValueError(f"API keys {names} are the same key; give each name its own")
        return hashed

    @staticmethod
    def _as_hash(key: str) -> str:
        if key.startswith(_HASH_PREFIX):
            if not _HASH_RE.match(key.lower()):
                raise ValueError("an API key hash is 'sha256:' and 64 hex digits")
            return key.lower()
        return hash_api_key(key)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if isinstance(self.tile, int) and self.tile and self.overlap >= self.tile:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than tile ({self.tile})")
        if not self.soft_time_limit_s < self.time_limit_s < self.visibility_timeout_s:
            raise ValueError(
                "time limits must satisfy soft_time_limit_s < time_limit_s < visibility_timeout_s, got "
                f"{self.soft_time_limit_s} < {self.time_limit_s} < {self.visibility_timeout_s}"
            )
        if self.worker_lost_s <= 2 * self.heartbeat_s:
            raise ValueError(
                f"worker_lost_s ({self.worker_lost_s}) must exceed two heartbeats (heartbeat_s={self.heartbeat_s})"
            )
        url = self.storage_url.strip()
        if "://" in url and not url.startswith(("s3://", "file:///")):
            raise ValueError(f"storage_url {url!r}: use a path, file:///path or s3://bucket/prefix")
        if self.uses_s3 and not url.removeprefix("s3://").split("/", 1)[0]:
            raise ValueError(f"storage_url {url!r} names no bucket: s3://bucket/prefix")
        if self.environment == "production" and self.debug_tile_delay_s:
            raise ValueError("debug_tile_delay_s must be 0 in production")
        if self.environment == "production" and self.link_secret is None:
            raise ValueError("link_secret must be set in production: without it the key that signs result links "
                             "is kept in Redis, where anything that reaches Redis can read it and forge links")
        if self.redis_password is not None and self.redis_url:
            self.redis_url = _with_password(self.redis_url, self.redis_password.get_secret_value())
        return self

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir if self.models_dir is not None else self.data_dir / "models"

    @property
    def resolved_cache_dir(self) -> Path | None:
        """The compile cache folder, or None when ``compile_cache`` is off."""
        if not self.compile_cache:
            return None
        return self.cache_dir if self.cache_dir is not None else self.data_dir / "cache"

    @property
    def requeue_within_s(self) -> float:
        """Longest time from a worker's death (or a lost message) until its job is queued again: the silence
        (or absence) the reaper waits for, plus the wait for its next pass."""
        return max(self.worker_lost_s, self.message_lost_s) + self.reaper_interval_s

    @property
    def resolved_storage_dir(self) -> Path:
        """The jobs' folder (the folder backend), or this host's spool for uploads and inputs (S3)."""
        url = self.storage_url.strip()
        if url and not self.uses_s3:
            return Path(url.removeprefix("file://")) if url.startswith("file://") else Path(url)
        return self.storage_dir if self.storage_dir is not None else self.data_dir / "jobs"

    @property
    def uses_s3(self) -> bool:
        return self.storage_url.strip().startswith("s3://")


def _with_password(url: str, password: str) -> str:
    """``url`` with ``password`` (URL-quoted) after its user name; ValueError if it holds another one."""
    parts = urlsplit(url)
    if parts.password is not None:
        if unquote(parts.password) == password:
            return url
        raise ValueError("redis_url holds a password and redis_password gives another: give it once")
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


def exposure_gaps(settings: Settings) -> list[str]:
    """What serving beyond loopback still lacks (API keys, a host allow-list); empty: nothing.

    ``srgan serve`` refuses to start without them, an app run by ``uvicorn --factory`` refuses each request
    that arrives on a non-loopback address (``api.middleware.ExposureGuard``), unless ``insecure``."""
    required = (("API keys (SRGAN_API_KEYS)", settings.api_keys),
                ("a host allow-list (SRGAN_ALLOWED_HOSTS)", settings.allowed_hosts))
    return [what for what, given in required if not given]


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
