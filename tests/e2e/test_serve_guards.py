"""`srgan serve` against slow and idle connections, with keys on: deadlines, the connection cap, the headers
every answer carries, ``/metrics`` behind the key; and the ``uvicorn --factory`` route's exposure guard.

Real sockets on a real served stack, with small limits set through settings (a handful of connections).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from core.redis_server import free_port
from tests.e2e.conftest import upscale_a_jpeg
from tests.utils.service import REPO, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

KEY = "guards-test-key-0123456789"
IDLE_S, HEADER_S, MAX_CONNECTIONS = 1.0, 2.5, 24
SERVE_ENV = {"SRGAN_API_KEYS": json.dumps({"alice": KEY}), "SRGAN_HTTP_IDLE_TIMEOUT_S": str(IDLE_S),
             "SRGAN_HTTP_HEADER_TIMEOUT_S": str(HEADER_S), "SRGAN_HTTP_MAX_CONNECTIONS": str(MAX_CONNECTIONS)}
AUTH = {"Authorization": f"Bearer {KEY}"}


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.setblocking(False)
    return sock


def closed_by_peer(sock: socket.socket) -> bool:
    """The server closed the connection (end of stream or reset); False while it is open and silent."""
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:  # ECONNRESET
        return True


def trickle(sock: socket.socket, data: bytes, sent: dict[int, int]) -> bool:
    """Send one more byte of ``data`` (as slowloris does); False once the server has closed the socket."""
    at = sent.get(sock.fileno(), 0) % len(data)
    try:
        sock.send(data[at:at + 1])
    except OSError:
        return False
    sent[sock.fileno()] = at + 1
    return True


def test_idle_sockets_and_slow_headers_are_closed_in_time(served):
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Padding: " + b"a" * 4000
    idle = [connect(served.url) for _ in range(6)]
    slow = [connect(served.url) for _ in range(6)]
    opened = time.monotonic()
    closed_at: dict[int, float] = {}
    sent: dict[int, int] = {}
    while len(closed_at) < len(idle) + len(slow) and time.monotonic() - opened < HEADER_S + 8:
        for sock in idle + slow:
            if id(sock) in closed_at:
                continue
            if closed_by_peer(sock) or (sock in slow and not trickle(sock, head, sent)):
                closed_at[id(sock)] = time.monotonic() - opened
        time.sleep(0.2)  # a byte every 0.2 s per slow socket: never idle, never done
    idle_times = [closed_at.get(id(s)) for s in idle]
    slow_times = [closed_at.get(id(s)) for s in slow]
    for sock in idle + slow:
        sock.close()
    assert all(t is not None and IDLE_S - 0.2 <= t <= IDLE_S + 1.5 for t in idle_times), idle_times
    assert all(t is not None and HEADER_S - 0.2 <= t <= HEADER_S + 1.5 for t in slow_times), slow_times
    assert "slow request headers" in served.log_tail(20_000) or "idle" in served.log_tail(20_000)


def test_a_flood_of_idle_sockets_locks_out_neither_health_checks_nor_uploads(served):
    log_before = served.log_path.stat().st_size
    flood = [connect(served.url) for _ in range(4 * MAX_CONNECTIONS)]
    try:
        started = time.monotonic()
        health = httpx.get(served.url + "/healthz", timeout=5)
        assert health.status_code == 200 and time.monotonic() - started < 1.0
        with httpx.Client(base_url=served.url, headers=AUTH, timeout=30) as client:
            upscale_a_jpeg(client)
        # the oldest idle sockets made room; at most the cap is open at once
        assert all(closed_by_peer(sock) for sock in flood[:MAX_CONNECTIONS])
        api = psutil.Process(served.process.pid)
        open_to_port = [c for c in api.net_connections("tcp")
                        if c.laddr and c.laddr.port == int(served.url.rsplit(":", 1)[1]) and c.status == "ESTABLISHED"]
        assert len(open_to_port) <= MAX_CONNECTIONS
    finally:
        for sock in flood:
            sock.close()
    # one summary line (at most every 10 s), never a line per socket
    wait_until(lambda: "closed idle at the connection cap" in served.log_tail(5_000), timeout_s=15, interval_s=0.2,
               what="the summary of the closures")
    assert served.log_path.stat().st_size - log_before < 20_000, served.log_tail()


def test_every_answer_carries_the_security_headers_and_no_server_banner(served):
    for path, expected in (("/", 200), ("/v1/jobs", 401), ("/healthz", 200), ("/docs", 200)):
        response = httpx.get(served.url + path, timeout=10)
        assert response.status_code == expected, (path, response.text)
        csp = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp, (path, csp)
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "server" not in response.headers, (path, response.headers)
    page_csp = httpx.get(served.url + "/", timeout=10).headers["content-security-policy"]
    assert "unsafe-inline" not in page_csp  # the page's script and style come from /static


def test_metrics_need_the_key_when_keys_are_on(served):
    assert httpx.get(served.url + "/metrics", timeout=10).status_code == 401
    assert httpx.get(served.url + "/metrics", headers={"X-API-Key": "wrong"}, timeout=10).status_code == 403
    scraped = httpx.get(served.url + "/metrics", headers=AUTH, timeout=10)
    assert scraped.status_code == 200 and "srgan_queue_depth" in scraped.text


def public_address() -> str | None:
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return address.address
    return None


def test_the_factory_route_has_the_deadlines_and_refuses_requests_beyond_loopback_without_keys(
        redis_db, tiny_model: Path, tmp_path: Path):
    address = public_address()
    if address is None:
        pytest.skip("this machine has no address beyond loopback to reach the server on")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRGAN_")}
    env.update(SRGAN_REDIS_URL=redis_db(), SRGAN_DATA_DIR=str(tmp_path), SRGAN_MODEL=str(tiny_model),
               PYTHONPATH=str(REPO))
    log_path = tmp_path / "uvicorn.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(  # noqa: S603 - the documented route, as a user runs it
            [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--http",
             "api.server:GuardedH11Protocol", "--no-server-header", "--host", "0.0.0.0", "--port", str(port)],
            cwd=REPO, env={**env, "SRGAN_HTTP_IDLE_TIMEOUT_S": "1"}, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                local = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
        assert local.status_code == 200 and "server" not in local.headers
        idle = connect(f"http://127.0.0.1:{port}")  # the documented --http class: the same deadlines
        wait_until(lambda: closed_by_peer(idle), timeout_s=5, interval_s=0.1, what="the idle socket's close")
        idle.close()
        remote = httpx.get(f"http://{address}:{port}/v1/models", timeout=5)
        assert remote.status_code == 503
        error = remote.json()["error"]
        assert error["code"] == "insecure_exposure" and "SRGAN_API_KEYS" in error["message"]
        assert httpx.get(f"http://{address}:{port}/", timeout=5).status_code == 503
    finally:
        process.terminate()
        process.wait(15)
