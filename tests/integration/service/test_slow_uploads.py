"""Slow and stalled uploads are cut with 408 over a real socket, their temp files removed."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.utils.service import LiveApi, image_bytes, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(60)]

BOUNDARY = "sl0w"


@pytest.fixture(scope="module")
def strict_api(service, make_settings):
    """An API on the service's Redis and storage with short upload timeouts."""
    settings = make_settings(service.settings.redis_url, data_dir=service.settings.data_dir,
                             upload_idle_timeout_s=1.0, upload_min_rate_bytes_s=2000, upload_rate_grace_s=3.0)
    api = LiveApi(settings).start()
    yield api
    api.stop()


def head(port: int, length: int, path: str = "/v1/jobs") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {length}\r\n\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n").encode()


def trickle(port: int, results: list, *, every_s: float, stop: threading.Event, path: str = "/v1/jobs") -> None:
    """Send a byte every ``every_s`` until the server answers; record the status line and when."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head(port, 100_000, path))
        sock.settimeout(every_s)
        while not stop.is_set():
            try:
                answer = sock.recv(4096)
                seconds = time.monotonic() - started
                sock.settimeout(2)
                while b"}}" not in answer and (more := sock.recv(4096)):  # the JSON body may come separately
                    answer += more
                results.append((answer.split(b"\r\n", 1)[0].decode(), seconds, answer))
                return
            except TimeoutError:
                try:
                    sock.sendall(b"x")
                except OSError:
                    continue


@pytest.mark.parametrize(("every_s", "kind"), [(5.0, "sent nothing"), (0.05, "too slow")])
def test_many_slow_uploads_are_cut_and_leave_no_files(strict_api, service, every_s, kind):
    results: list = []
    stop = threading.Event()
    threads = [threading.Thread(target=trickle, args=(strict_api.port, results), kwargs={"every_s": every_s,
                                                                                        "stop": stop})
               for _ in range(30)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(results) == len(threads), timeout_s=20, what="30 answers")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert all(status == "HTTP/1.1 408 Request Timeout" for status, _, _ in results), results[:3]
    assert all(kind.encode() in body and b"upload_timeout" in body for _, _, body in results), results[0][2]
    assert max(seconds for _, seconds, _ in results) < 6
    assert list((service.storage_dir / ".incoming").iterdir()) == [], "no temp file is left"
    with strict_api.client() as client:  # a normal upload still goes through
        response = client.post("/v1/jobs", files={"file": ("a.png", image_bytes(8, 8), "image/png")})
        assert response.status_code == 202, response.text


def test_a_slow_batch_upload_is_cut_too(strict_api, service):
    results: list = []
    stop = threading.Event()
    try:
        trickle(strict_api.port, results, every_s=5.0, stop=stop, path="/v1/batches")
    finally:
        stop.set()
    [(status, seconds, body)] = results
    assert status == "HTTP/1.1 408 Request Timeout" and b"upload_timeout" in body, body
    assert seconds < 6
    assert list((service.storage_dir / ".incoming").iterdir()) == [], "no temp file is left"
