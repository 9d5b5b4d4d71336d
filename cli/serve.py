"""``srgan serve``: the HTTP API; with no Redis configured, a whole service in one command.

With ``SRGAN_REDIS_URL`` unset it starts, beside the API, a private
redis-server (data in ``<data_dir>/redis``, locked down: see
``core.redis_server``), worker processes and a webhook delivery worker,
watches them (a worker or the Redis that dies is restarted; Redis reloads its
append-only file, so jobs are kept), and stops them all when it stops (Ctrl-C
or SIGTERM). Bound beyond loopback it refuses to start without API keys and a
host allow-list, unless ``--insecure``. With ``SRGAN_REDIS_URL`` set (compose,
production) it
runs only the API and the workers are started separately (``srgan worker``).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from cli.exits import USAGE, fail
from cli.worker import celery_argv
from core.catalog.announce import EMBEDDED_URL_FILE
from core.catalog.catalog import ModelCatalog
from core.redis_server import RedisServer, die_with_parent
from core.settings import exposure_gaps, get_settings, is_loopback
from model.errors import ModelError

log = logging.getLogger("srgan.serve")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the HTTP API (and, with no Redis configured, Redis and a worker)",
                       description="Run the web service. Without SRGAN_REDIS_URL it also starts an embedded "
                                   "Redis and worker processes, so this one command gives a working service.")
    p.add_argument("--host", help="address to listen on (default SRGAN_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default SRGAN_PORT, 8000)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="worker processes to start with the embedded Redis (default 1; 0 for none)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="log level of the API and workers (default info)")
    p.add_argument("--insecure", action="store_true",
                   help="serve beyond loopback without API keys (SRGAN_API_KEYS) or a host allow-list "
                        "(SRGAN_ALLOWED_HOSTS); refused otherwise")
    p.set_defaults(func=run)


class _Stop(Exception):
    """Raised by our SIGTERM handler so the stack of started processes unwinds."""


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop(signal.Signals(signum).name)


class WorkerProcess:
    """One ``celery worker`` child in its own process group, restarted when it dies while serving.

    Restarts are budgeted, never given up: 1 s after a death, doubled for each earlier restart still inside
    ``window_s`` (at most ``backoff_max_s``); once ``budget`` restarts fall inside the window, the next waits
    until the oldest leaves it (``unavailable`` says why and for how long meanwhile), and then goes on.
    """

    def __init__(self, env: dict[str, str], loglevel: str, index: int, webhooks: bool = False, *,
                 budget: int = 5, window_s: float = 600.0, backoff_max_s: float = 30.0) -> None:
        name = f"srgan-{'webhooks' if webhooks else index}-{os.getpid()}@%h"
        self.argv = [sys.executable, "-m", "celery", *celery_argv(loglevel=loglevel.upper(), name=name,
                                                                   webhooks=webhooks)]
        self.env = env
        self.webhooks = webhooks
        self.budget, self.window_s, self.backoff_max_s = budget, window_s, backoff_max_s
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.restart_times: collections.deque[float] = collections.deque()
        self.down_until: float | None = None
        """While dead: when the next restart is due (``time.monotonic``); None while running."""
        self.exhausted = False
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="srgan-worker-watch", daemon=True)

    def start(self) -> WorkerProcess:
        self.process = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL,  # noqa: S603
                                        preexec_fn=die_with_parent, start_new_session=True)
        self.down_until, self.exhausted = None, False
        if not self._watcher.is_alive():
            self._watcher.start()
        return self

    def next_delay(self, now: float) -> tuple[float, bool]:
        """Seconds until the next restart after a death at ``now``, and whether the budget is used up."""
        while self.restart_times and now - self.restart_times[0] >= self.window_s:
            self.restart_times.popleft()
        if len(self.restart_times) >= self.budget:
            return self.restart_times[0] + self.window_s - now, True
        return min(self.backoff_max_s, 2.0 ** len(self.restart_times)), False

    def _watch(self) -> None:
        while not self._stopping.wait(0.5):
            proc = self.process
            if proc is None or proc.poll() is None or self._stopping.is_set():
                continue
            self._kill_group(proc)  # pool processes left behind, if any
            delay, exhausted = self.next_delay(time.monotonic())
            self.down_until, self.exhausted = time.monotonic() + delay, exhausted
            if exhausted:
                log.error("the worker exited with %s and was restarted %d times in the last %.0f s: waiting %.0f s "
                          "before the next restart (uploads are refused with 503 while no worker runs)",
                          proc.returncode, len(self.restart_times), self.window_s, delay)
            else:
                log.warning("the worker exited with %s; restarting it in %.0f s", proc.returncode, delay)
            if self._stopping.wait(delay):
                return
            self.restarts += 1
            self.restart_times.append(time.monotonic())
            log.warning("restarting the worker (restart %d)", self.restarts)
            self.start()

    def unavailable(self) -> tuple[str, float] | None:
        """Why this worker runs no jobs now and for how many more seconds, while its restart budget is used up."""
        until = self.down_until
        if until is None or not self.exhausted:
            return None
        return (f"the worker died {self.budget} times within {self.window_s:g} s; it is restarted again in "
                f"{max(0.0, until - time.monotonic()):.0f} s", max(0.0, until - time.monotonic()))

    @staticmethod
    def _kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def stop(self, timeout_s: float = 15.0) -> None:
        """Warm shutdown (the running job may finish), then kill whatever is left of the group."""
        self._stopping.set()
        if self._watcher.is_alive() and self._watcher is not threading.current_thread():
            self._watcher.join(5.0)  # a restart in progress finishes first, so its new process is stopped too
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("the worker did not stop in %.0f s; killing it", timeout_s)
        self._kill_group(proc)  # pool processes left behind, if any
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


class WorkerPool:
    """The job workers ``srgan serve`` supervises, as the API asks about them (``app.state.worker_supervision``):
    jobs are refused (503 ``no_worker``) only while every one of them waits out a used-up restart budget."""

    def __init__(self, workers: list[WorkerProcess]) -> None:
        self.workers = workers

    def unavailable(self) -> tuple[str, float] | None:
        reasons = [w.unavailable() for w in self.workers]
        if not self.workers or any(r is None for r in reasons):
            return None
        why = [r for r in reasons if r is not None]
        return "no worker runs: " + "; ".join(r[0] for r in why), min(r[1] for r in why)

    def describe(self) -> str:
        running = sum(1 for w in self.workers if w.down_until is None)
        return f"{running} of {len(self.workers)} supervised worker(s) running"


class RedisSupervisor:
    """Restarts the embedded Redis when it dies (same port and password; its append-only file is reloaded)."""

    def __init__(self, server, interval_s: float = 1.0) -> None:  # noqa: ANN001 - a core.redis_server.RedisServer
        self.server = server
        self.interval_s = interval_s
        self.restarts = 0
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="srgan-redis-watch", daemon=True)

    def start(self) -> RedisSupervisor:
        self._watcher.start()
        return self

    def _watch(self) -> None:
        backoff = self.interval_s
        while not self._stopping.wait(backoff):
            if self.server.alive():
                backoff = self.interval_s
                continue
            code = self.server.process.returncode if self.server.process is not None else None
            log.warning("the embedded Redis exited (%s); restarting it on %s", code, self.server.address)
            try:
                self.server.restart()
            except Exception as exc:  # noqa: BLE001 - keep trying; /healthz fails after the grace period
                backoff = min(backoff * 2, 30.0)
                log.error("the embedded Redis did not restart: %s; trying again in %.0f s", exc, backoff)
                continue
            self.restarts += 1
            backoff = self.interval_s
            log.warning("the embedded Redis is back (restart %d)", self.restarts)

    def stop(self) -> None:
        self._stopping.set()
        if self._watcher.is_alive():
            self._watcher.join(35.0)  # a restart in progress ends first, so the server it starts is stopped too


def refuse_exposure(host: str, settings, insecure: bool) -> str | None:  # noqa: ANN001 - core.settings.Settings
    """Why serving on ``host`` is refused (beyond loopback with no keys or no host allow-list), or None."""
    if insecure or is_loopback(host):
        return None
    missing = exposure_gaps(settings)
    if not missing:
        return None
    return (f"refusing to serve on {host}, beyond loopback, without {' or '.join(missing)}: anyone who reaches "
            "the port could use the service. Set them (docs/service.md, \"Exposing the service\"), bind to "
            "127.0.0.1, or pass --insecure")


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(text)


def run(args: argparse.Namespace) -> int:
    import uvicorn  # start-up: uvicorn

    from api.main import create_app  # start-up: FastAPI
    from api.server import fit_connection_cap, server_config  # start-up: uvicorn

    settings = get_settings()
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        model_path = ModelCatalog(settings).resolve(None).path
    except ModelError as exc:
        return fail(str(exc), USAGE)
    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    refused = refuse_exposure(host, settings, args.insecure)
    if refused:
        return fail(refused, USAGE)
    settings = settings.model_copy(update={"host": host})
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        with contextlib.ExitStack() as stack:
            workers: list[WorkerProcess] = []
            if not settings.redis_url:
                data_dir = Path(settings.data_dir).resolve()
                redis_server = RedisServer(data_dir / "redis").start()
                stack.callback(redis_server.stop)
                stack.callback(RedisSupervisor(redis_server).start().stop)
                settings = settings.model_copy(update={"redis_url": redis_server.url, "data_dir": data_dir})
                url_file = data_dir / EMBEDDED_URL_FILE  # so `srgan deploy` in another shell can tell the workers
                _write_private(url_file, redis_server.url + "\n")  # it holds the password
                stack.callback(url_file.unlink, missing_ok=True)
                env = {**os.environ, "SRGAN_REDIS_URL": redis_server.url, "SRGAN_DATA_DIR": str(data_dir)}
                supervised = functools.partial(WorkerProcess, env, args.log_level,
                                               budget=settings.worker_restart_budget,
                                               window_s=settings.worker_restart_window_s,
                                               backoff_max_s=settings.worker_restart_backoff_max_s)
                for index in range(max(0, args.workers)):
                    worker = supervised(index).start()
                    stack.callback(worker.stop)
                    workers.append(worker)
                if args.workers > 0:  # webhook deliveries: threads on their own queue, never behind a job
                    stack.callback(supervised(0, webhooks=True).start().stop)
                log.info("embedded Redis %s at %s (data in %s), %d worker(s), model %s",
                         redis_server.binary and redis_server.binary.version,
                         redis_server.address, data_dir / "redis", args.workers, model_path)
            settings = fit_connection_cap(settings)
            app = create_app(settings, exposure_checked=True)
            if workers:
                app.state.worker_supervision = WorkerPool(workers)
            server = uvicorn.Server(server_config(app, settings, host=host, port=port, log_level=args.log_level))
            print(f"srgan: serving on http://{host}:{server.config.port} (Ctrl-C to stop)", file=sys.stderr,
                  flush=True)
            server.run()
            return 0 if server.started else 1
    except (_Stop, KeyboardInterrupt):
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
