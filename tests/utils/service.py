"""Builders for the service's tests: worker subprocesses, a live API, test images."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import redis
from PIL import Image
from pydantic import SecretStr

from core.redis_server import die_with_parent, free_port
from core.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def service_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a subprocess these settings (only the fields that differ from defaults)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRGAN_")}
    defaults = Settings.model_construct()
    for name, value in settings.model_dump().items():
        if value is None or value == getattr(defaults, name, object()):
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[f"SRGAN_{name.upper()}"] = json.dumps(value) if isinstance(value, list) else str(value)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


class WorkerProc:
    """A real ``celery worker`` subprocess (prefork, one pool process) for ``settings``.

    ``webhooks=True``: the webhook delivery worker instead (its queue, a pool of threads).
    """

    def __init__(self, settings: Settings, log_path: Path, *, webhooks: bool = False) -> None:
        self.settings = settings
        self.name = f"test-{'webhooks-' if webhooks else ''}{uuid.uuid4().hex[:8]}"
        self.log_path = log_path
        self.webhooks = webhooks
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> WorkerProc:
        if self.webhooks:
            argv = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--loglevel", "INFO",
                    "--queues", self.settings.webhook_queue, "--concurrency", "4", "--pool", "threads",
                    "--hostname", f"{self.name}@%h", "--without-gossip", "--without-mingle"]
        else:
            argv = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--loglevel", "INFO",
                    "--queues", self.settings.queue, "--concurrency", "1", "--pool", "prefork",
                    "--hostname", f"{self.name}@%h", "--without-gossip", "--without-mingle"]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(argv, env=service_env(self.settings), cwd=REPO, stdout=self._log,  # noqa: S603
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        preexec_fn=die_with_parent, start_new_session=True)
        assert self.settings.redis_url is not None, "the service fixture gives every worker a Redis URL"
        client = redis.Redis.from_url(self.settings.redis_url, decode_responses=True)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.log_tail()}")
                if self.webhooks and f"{self.name}@" in self.log_tail(100_000) and " ready." in self.log_tail(100_000):
                    return self
                if any(str(m).startswith(self.name + "@") for m in client.zrange("srgan:workers", 0, -1)):
                    return self
                time.sleep(0.1)
        finally:
            client.close()
        self.stop()
        raise RuntimeError(f"worker did not become ready in {timeout_s} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def pool_pids(self) -> list[int]:
        return [p.pid for p in psutil.Process(self.pid).children()]

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill_pool_process(self) -> int:
        """``kill -9`` the pool process (the one running jobs); returns its pid."""
        (pid,) = self.pool_pids()
        os.kill(pid, signal.SIGKILL)
        return pid

    def kill_all(self) -> None:
        """``kill -9`` the whole worker: main process and pool."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout_s: float = 15.0) -> None:
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        self._log.close()


class LiveApi:
    """The FastAPI app served by uvicorn on a free port, in a thread of the test process."""

    def __init__(self, settings: Settings) -> None:
        import uvicorn

        from api.main import create_app

        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name="live-api", daemon=True)

    def start(self) -> LiveApi:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API did not start")
            time.sleep(0.02)
        return self

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


# --- images -----------------------------------------------------------------
@contextlib.contextmanager
def api_and_worker(settings: Settings, log_path: Path):
    """A live API and one worker process on ``settings``; yields an HTTP client of the API."""
    api = LiveApi(settings).start()
    worker = WorkerProc(settings, log_path).start()
    try:
        with api.client() as client:
            yield client
    finally:
        worker.stop()
        api.stop()


def image_bytes(width: int, height: int, mode: str = "RGB", fmt: str = "PNG", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
    arr = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    img = Image.fromarray(arr[:, :, 0] if channels == 1 else arr, mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A small PNG whose header declares ``width`` x ``height`` (a decompression bomb's shape)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def flat_image_bytes(width: int, height: int, fmt: str = "PNG") -> bytes:
    """A one-colour image: large in pixels, tiny in bytes."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 200)).save(buf, fmt)
    return buf.getvalue()


def wait_for(client: httpx.Client, location: str, *, timeout_s: float = 30.0) -> dict:
    """Poll a job (long-polling ``?wait``) until it has finished."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = client.get(location, params={"wait": min(5.0, max(0.1, deadline - time.monotonic()))}).json()
        if body["status"] in ("succeeded", "failed", "canceled", "aborted"):
            return body
    raise AssertionError(f"job {location} did not finish in {timeout_s} s: {body}")


def wait_until(predicate, *, timeout_s: float = 30.0, interval_s: float = 0.02, what: str = "condition"):  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def exif_make_as_rational() -> bytes:
    """An EXIF block (TIFF structure) whose ``Make`` tag is typed RATIONAL, not ASCII, as a buggy writer
    might store it: Pillow reads it, but cannot write it back."""
    entry = struct.pack("<HHII", 0x010F, 5, 1, 26)  # Make, RATIONAL, one value, at offset 26
    return (b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + entry + struct.pack("<I", 0)
            + struct.pack("<II", 1, 3))
