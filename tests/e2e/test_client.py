"""The client (`cli.client.Client` and `srgan upscale --server`) against `srgan serve`."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from cli.client import Client, ClientError, JobFailed
from tests.utils.service import REPO, image_bytes

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def nearest_x4(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data))).repeat(4, 0).repeat(4, 1)


def queued_total(url: str) -> float:
    metrics = httpx.get(url + "/metrics").text
    found = re.search(r'^srgan_jobs_total\{status="queued"\} (\S+)$', metrics, re.M)
    assert found, metrics
    return float(found.group(1))


def test_upscale_returns_the_result_bytes(served, tmp_path):
    src = tmp_path / "cat.png"
    src.write_bytes(image_bytes(20, 14, seed=4))
    with Client(served.url) as client:
        out = client.upscale(src)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(out))), nearest_x4(src.read_bytes()))
        seen: list[Any] = []
        job, data = client.upscale_job(image_bytes(96, 96, seed=5), progress=seen.append, format="webp", quality=100)
        assert job["status"] == "succeeded" and Image.open(io.BytesIO(data)).format == "WEBP"
        assert seen == sorted(seen) and seen[-1] == 1.0 and any(0 < p < 1 for p in seen), seen


class DropFirstAnswer(httpx.BaseTransport):
    """A real connection that loses the answer to the first POST after the server has taken it."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.posts = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST":
            self.posts += 1
            if self.posts == 1:
                response.read()
                response.close()
                raise httpx.ReadError("connection reset by peer (simulated, after the server answered)")
        return response

    def close(self) -> None:
        self.inner.close()


def test_a_lost_answer_is_retried_with_the_same_idempotency_key(served):
    transport = DropFirstAnswer()
    before = queued_total(served.url)
    with Client(served.url, transport=transport) as client:
        out = client.upscale(image_bytes(12, 12, seed=6))
    assert transport.posts == 2, "the upload was sent again"
    assert queued_total(served.url) == before + 1, "and made one job, not two"
    assert Image.open(io.BytesIO(out)).size == (48, 48)


def test_errors_are_typed(served):
    with Client(served.url, retries=0) as client:
        with pytest.raises(ClientError) as refused:
            client.upscale(b"not an image at all")
        assert refused.value.status == 415
        job = client.submit(image_bytes(160, 160), wait_s=0)
        client.http.delete(job["links"]["self"])
        with pytest.raises(JobFailed, match="canceled"):
            client.result(client.wait(job))


def srgan(*args, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=120, **kwargs)


def test_srgan_upscale_server_does_files_and_folders(served, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(image_bytes(10, 8, seed=1))
    (folder / "b.jpg").write_bytes(image_bytes(12, 6, fmt="JPEG", seed=2))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    single = tmp_path / "single.png"
    single.write_bytes(image_bytes(9, 9, seed=3))

    res = srgan("upscale", "--server", served.url, folder, single, "-o", tmp_path / "out")
    assert res.returncode == 1, res.stderr  # one bad file
    assert "broken.png" in res.stderr and "Traceback" not in res.stderr
    assert Image.open(tmp_path / "out" / "a_x4.png").size == (40, 32)
    assert Image.open(tmp_path / "out" / "b_x4.jpg").size == (48, 24)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "single_x4.png")), nearest_x4(single.read_bytes()))

    one = srgan("upscale", "--server", served.url, single, "-o", tmp_path / "one.webp", "--format", "webp")
    assert one.returncode == 0, one.stderr
    assert Image.open(tmp_path / "one.webp").format == "WEBP"

    local_only = srgan("upscale", "--server", served.url, single, "--tile", "64")
    assert local_only.returncode == 2 and "local upscaling only" in local_only.stderr
    away = srgan("upscale", "--server", "http://127.0.0.1:9", single)
    assert away.returncode == 2 and "cannot reach" in away.stderr


def test_srgan_upscale_server_follows_the_output_name_and_skips_what_exists(served, tmp_path):
    """As locally: ``-o x.png`` from a JPEG is PNG in a folder made for it; a re-run skips what is there."""
    src = tmp_path / "in" / "photo.jpg"
    src.parent.mkdir()
    src.write_bytes(image_bytes(10, 8, fmt="JPEG", seed=4))
    dst = tmp_path / "new" / "photo.png"
    res = srgan("upscale", "--server", served.url, src, "-o", dst)
    assert res.returncode == 0, res.stderr
    assert Image.open(dst).format == "PNG" and Image.open(dst).size == (40, 32)
    again = srgan("upscale", "--server", served.url, src, "-o", dst)
    assert again.returncode == 0 and "exists, skipped" in again.stdout
    conflict = srgan("upscale", "--server", served.url, src, "-o", dst, "--format", "webp", "--overwrite")
    assert conflict.returncode == 2 and "conflicts" in conflict.stderr

    first = srgan("upscale", "--server", served.url, src.parent, "-o", tmp_path / "out")
    assert "1 done, 0 skipped, 0 failed" in first.stdout, first.stderr
    rerun = srgan("upscale", "--server", served.url, src.parent, "-o", tmp_path / "out")
    assert "0 done, 1 skipped, 0 failed" in rerun.stdout, rerun.stderr
