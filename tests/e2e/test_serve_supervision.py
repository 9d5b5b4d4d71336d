"""`srgan serve` supervises its worker with a restart budget over a window: a worker that keeps dying is
restarted with backoff; once the budget is used up, uploads get 503 ``no_worker`` (not a 202 for a job no
one runs) and ``/readyz`` says why; when the window frees a restart the worker comes back and jobs run.

The real served stack; the worker's main process is killed (SIGKILL) as a crash would end it. Minutes
compressed by settings: 2 restarts within 15 s.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.conftest import start_served, upscale_a_jpeg
from tests.utils.service import image_bytes, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

WINDOW_S = 15.0
SERVE_ENV = {"SRGAN_WORKER_RESTART_BUDGET": "2", "SRGAN_WORKER_RESTART_WINDOW_S": str(WINDOW_S),
             "SRGAN_WORKER_RESTART_BACKOFF_MAX_S": "0.5"}


def job_worker(serve_pid: int, not_these: set[int]) -> psutil.Process | None:
    """The running ``celery worker`` child that runs jobs (not the webhook one), if it is not in ``not_these``."""
    for child in psutil.Process(serve_pid).children():
        try:
            if "srgan-0-" in " ".join(child.cmdline()) and child.pid not in not_these and child.is_running():
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def test_a_worker_that_keeps_dying_is_refused_work_then_restarted_again(tiny_model: Path, tmp_path: Path):
    with start_served(tmp_path, tiny_model, SERVE_ENV) as served, \
            httpx.Client(base_url=served.url, timeout=30) as client:
        killed: set[int] = set()
        for crash in range(3):  # the third death finds 2 restarts inside the window
            worker = wait_until(lambda: job_worker(served.process.pid, killed), timeout_s=30,
                                interval_s=0.1, what=f"worker {crash}")
            killed.add(worker.pid)
            worker.kill()

        ready = wait_until(lambda: (r := client.get("/readyz")).status_code == 503
                           and not r.json()["checks"].get("supervisor", {"ok": True})["ok"] and r,
                           timeout_s=10, interval_s=0.1, what="readyz to name the supervisor")
        assert "died 2 times within 15 s" in ready.json()["checks"]["supervisor"]["detail"]
        upload = client.post("/v1/jobs", files={"file": ("a.png", image_bytes(8, 8), "image/png")})
        assert upload.status_code == 503, upload.text
        assert upload.json()["error"]["code"] == "no_worker"
        assert 0 < int(upload.headers["retry-after"]) <= WINDOW_S
        health = client.get("/healthz")
        assert health.status_code == 200 and "no worker runs" in health.json()["detail"]

        # never given up: once the window frees a restart, a worker runs again and so do jobs
        wait_until(lambda: job_worker(served.process.pid, killed), timeout_s=WINDOW_S + 15, interval_s=0.2,
                   what="the worker to be restarted after the window")
        wait_until(lambda: client.get("/readyz").status_code == 200, timeout_s=60, interval_s=0.2,
                   what="the restarted worker to be ready")
        upscale_a_jpeg(client)
        assert "waiting" in served.log_tail(50_000) and "restarting the worker" in served.log_tail(50_000)
