"""The served stack for end-to-end tests: `srgan serve` as a subprocess (embedded Redis + a worker + the API)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
from PIL import Image

from core.redis_server import free_port
from tests.utils.service import REPO, image_bytes, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    log_path: Path
    seen_pids: set[int] = field(default_factory=set)

    def descendants(self) -> list[psutil.Process]:
        try:
            found = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        self.seen_pids.update(p.pid for p in found)
        return found

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, timeout_s: float = 30.0) -> int | None:
        if self.process.poll() is None:
            self.descendants()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode

    def leftovers(self) -> list[int]:
        alive = []
        for pid in self.seen_pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        return alive


def serve_env(data_dir: Path, model: Path | str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRGAN_")}  # no SRGAN_REDIS_URL: embedded
    env.update(SRGAN_DATA_DIR=str(data_dir), SRGAN_MODEL=str(model), SRGAN_BACKEND="onnxruntime",
               SRGAN_THREADS="1", SRGAN_TILE="32", SRGAN_OVERLAP="4", SRGAN_HEARTBEAT_S="0.5",
               SRGAN_DEBUG_TILE_DELAY_S="0.02")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@contextmanager
def start_served(data_dir: Path, model: Path | str, env: dict[str, str] | None = None) -> Iterator[Served]:
    """``srgan serve`` on a free port with ``data_dir``, default ``model`` and ``env`` added to its
    environment, ready; stopped on exit."""
    log_path = data_dir / "serve.log"
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "cli.main", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO, env={**serve_env(data_dir, model), **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    stack = Served(process, f"http://127.0.0.1:{port}", data_dir, log_path)
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"srgan serve exited with {process.returncode}:\n{stack.log_tail()}")
            try:
                if httpx.get(stack.url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"srgan serve was not ready in time:\n{stack.log_tail()}")
            time.sleep(0.2)
        stack.descendants()
        yield stack
    finally:
        stack.stop()
        for pid in stack.leftovers():  # never leave processes behind, even when a test failed
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass


@pytest.fixture(scope="module")
def served(request: pytest.FixtureRequest, tiny_model: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``srgan serve`` for the module; a module's ``SERVE_ENV`` dict adds to its environment."""
    with start_served(tmp_path_factory.mktemp("served"), tiny_model,
                      getattr(request.module, "SERVE_ENV", None)) as stack:
        yield stack


@pytest.fixture(scope="module")
def browser():
    from playwright import sync_api  # the dev extra

    # a missing browser is a failure, not a skip: .ci/run installs Debian's chromium
    assert os.access(CHROMIUM, os.X_OK), (f"{CHROMIUM} is missing: run .ci/run, which installs Chromium and "
                                          "redis-server and then runs make test (or: apt-get install chromium)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def wait_in_page(page, expression: str, timeout: float = 30_000) -> None:  # noqa: ANN001 - a playwright Page
    """``page.wait_for_function(expression)`` without its in-page ``eval``, which the page's
    Content-Security-Policy refuses (no 'unsafe-eval', as it should): the expression is evaluated through
    the DevTools protocol, which the policy does not govern, every 50 ms until it is true."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out after {timeout / 1000:g} s waiting for {expression}"
        page.wait_for_timeout(50)


def upscale_a_jpeg(client: httpx.Client) -> tuple[dict, httpx.Response]:
    """POST a 33x21 JPEG to a served stack with the tiny x4 model, wait for it; the job and its result,
    checked to be a 132x84 JPEG."""
    response = client.post("/v1/jobs", files={"file": ("photo.jpg", image_bytes(33, 21, fmt="JPEG"), "image/jpeg")})
    assert response.status_code == 202, response.text
    job = wait_for(client, response.headers["location"])
    assert job["status"] == "succeeded", job
    result = client.get(job["links"]["result"])
    assert result.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(result.content)).size == (132, 84)
    return job, result
