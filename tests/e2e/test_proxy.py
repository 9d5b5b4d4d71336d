"""The reverse proxy of compose and Kubernetes (docker/nginx/srgan.conf.template) in front of a real
`srgan serve`: a real nginx renders the template as its image does, then jobs pass through it and slow headers,
idle sockets and oversized uploads are stopped by it. Debian's nginx (.ci/run installs it)."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from core.redis_server import free_port
from tests.e2e.conftest import upscale_a_jpeg
from tests.utils.service import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
TEMPLATE = (REPO / "docker" / "nginx" / "srgan.conf.template").read_text()


def render(env: dict[str, str], port: int) -> str:
    """The template as the nginx image renders it (its variables from ``env``), listening on ``port``."""
    text = re.sub(r"\$\{(\w+)\}", lambda m: env[m[1]], TEMPLATE)
    return re.sub(r"listen \d+;", f"listen 127.0.0.1:{port};", text)


@pytest.fixture(scope="module")
def proxy(served, tmp_path_factory) -> Iterator[str]:
    assert Path(NGINX).exists(), f"{NGINX} is missing: run .ci/run, which installs nginx (or: apt-get install nginx)"
    root = tmp_path_factory.mktemp("nginx")
    port = free_port()
    upstream = urlparse(served.url).netloc
    env = {"SRGAN_HTTP_HEADER_TIMEOUT_S": "2", "SRGAN_HTTP_IDLE_TIMEOUT_S": "2", "SRGAN_UPLOAD_IDLE_TIMEOUT_S": "5",
           "SRGAN_HTTP_MAX_CONNECTIONS": "100", "SRGAN_PROXY_MAX_CONNECTIONS_PER_CLIENT": "50",
           "SRGAN_PROXY_MAX_BODY_BYTES": "1m", "SRGAN_PROXY_UPSTREAM": upstream}
    (root / "srgan.conf").write_text(render(env, port))
    (root / "nginx.conf").write_text(
        f"daemon off;\npid {root}/nginx.pid;\nerror_log {root}/error.log notice;\n"
        "events { worker_connections 256; }\n"
        f"http {{ access_log off; client_body_temp_path {root}/body; proxy_temp_path {root}/proxy;\n"
        f"  fastcgi_temp_path {root}/f; uwsgi_temp_path {root}/u; scgi_temp_path {root}/s;\n"
        f"  include {root}/srgan.conf; }}\n")
    checked = subprocess.run([NGINX, "-t", "-p", str(root), "-c", str(root / "nginx.conf")], capture_output=True,
                             text=True)
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen([NGINX, "-p", str(root), "-c", str(root / "nginx.conf")])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (root / "error.log").read_text()
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def test_jobs_pass_through_the_proxy_which_names_no_version(proxy):
    with httpx.Client(base_url=proxy, timeout=60) as client:
        job, result = upscale_a_jpeg(client)
        assert job["status"] == "succeeded"
        health = client.get("/healthz")
        assert health.status_code == 200 and health.headers.get("server") == "nginx", "server_tokens off"
        events = client.get(job["links"]["events"])  # Server-Sent Events pass (unbuffered) to the end
        assert events.status_code == 200 and '"succeeded"' in events.text


def _closed_after(sock: socket.socket, limit_s: float) -> float:
    """Seconds until the peer closes ``sock`` (at most ``limit_s``)."""
    started = time.monotonic()
    sock.settimeout(limit_s)
    try:
        while sock.recv(4096):
            pass
    except (TimeoutError, ConnectionResetError):
        pass
    return time.monotonic() - started


def test_the_proxy_closes_slow_headers_and_idle_sockets_at_its_deadlines(proxy):
    port = urlparse(proxy).port
    slow = socket.create_connection(("127.0.0.1", port))
    slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # and then nothing more
    idle = socket.create_connection(("127.0.0.1", port))
    try:
        assert _closed_after(slow, 10) < 4, "client_header_timeout (2 s here)"
        assert _closed_after(idle, 10) < 4, "a socket that never sends a request is closed too"
    finally:
        slow.close()
        idle.close()


def test_the_proxy_refuses_an_upload_over_its_body_limit(proxy):
    big = b"\xff" * (2 * 2**20)  # over the 1m set here
    response = httpx.post(proxy + "/v1/jobs", files={"file": ("big.png", big, "image/png")}, timeout=30)
    assert response.status_code == 413
