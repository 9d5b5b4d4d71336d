"""Any output size end to end: `srgan serve` with an x4 model (the default) and an x2 one in its registry.

A job asking a fractional scale or a width gets exactly that size; the smallest model whose scale reaches the
need runs (x2 and x1.5: the x2 model, x2.5 and x3: the x4 one, x6: the largest, resampled up), and the record
says which model ran and how its output was resized. `srgan upscale --server` and the web page ask the same.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from bench.tiny_models import make_nearest_model
from core.catalog.registry import Registry
from tests.e2e.conftest import start_served, wait_in_page
from tests.utils.models import publish_checked
from tests.utils.service import REPO, image_bytes, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def served_sizes(tmp_path_factory):
    files, data_dir = tmp_path_factory.mktemp("models"), tmp_path_factory.mktemp("served-sizes")
    registry = Registry(data_dir / "models")
    publish_checked(registry, make_nearest_model(files / "x4.onnx", scale=4, name="near4"), name="near4")
    publish_checked(registry, make_nearest_model(files / "x2.onnx", scale=2, name="near2"), name="near2")
    with start_served(data_dir, "near4") as stack:
        yield stack


def _run(client: httpx.Client, upload: bytes, **fields: object) -> tuple[dict, Image.Image]:
    response = client.post("/v1/jobs", files={"file": ("photo.png", upload, "image/png")},
                           data={k: str(v) for k, v in fields.items()})
    assert response.status_code == 202, response.text
    job = wait_for(client, response.headers["location"], timeout_s=60)
    assert job["status"] == "succeeded", job
    return job, Image.open(io.BytesIO(client.get(job["links"]["result"]).content))


@pytest.mark.parametrize(("fields", "size", "model", "resample", "filename"), [
    ({"scale": "2.5"}, (800, 600), "near4", True, "photo_x2.5.png"),
    ({"width": "1920"}, (1920, 1440), "near4", True, "photo_1920w.png"),  # x6: the largest model, resampled up
    ({"scale": "2"}, (640, 480), "near2", False, "photo_x2.png"),
    ({"scale": "1.5"}, (480, 360), "near2", True, "photo_x1.5.png"),
    ({"scale": "3"}, (960, 720), "near4", True, "photo_x3.png"),
    ({}, (1280, 960), "near4", False, "photo_x4.png"),
])
def test_the_result_has_the_asked_size_from_the_smallest_model_reaching_it(served_sizes, fields, size, model,
                                                                            resample, filename):
    with httpx.Client(base_url=served_sizes.url, timeout=60) as client:
        job, result = _run(client, image_bytes(320, 240), **fields)
    assert result.size == size == (job["output"]["width"], job["output"]["height"])
    assert job["model"]["name"] == model and job["params"]["model"] == model
    native = {"near4": 4, "near2": 2}[model]
    assert job["model"]["scale"] == native
    assert job["resample"] == ({"model_scale": native, "size": list(size), "filter": "lanczos"} if resample else None)
    assert job["output"]["filename"] == filename


def test_a_named_model_runs_as_named_and_bad_sizes_are_422(served_sizes):
    with httpx.Client(base_url=served_sizes.url, timeout=60) as client:
        job, result = _run(client, image_bytes(40, 30), scale=2, model="near4")
        assert job["model"]["name"] == "near4" and result.size == (80, 60)
        assert job["resample"] == {"model_scale": 4, "size": [80, 60], "filter": "lanczos"}
        for fields, field in [({"scale": "10"}, "scale"), ({"scale": "2", "max_side": "90"}, "scale"),
                              ({"width": "20"}, "width=20"), ({"width": "400"}, "width=400")]:
            response = client.post("/v1/jobs", files={"file": ("in.png", image_bytes(40, 30), "image/png")},
                                   data=fields)
            assert response.status_code == 422, response.text
            assert response.json()["error"]["message"].startswith(field), response.json()


def test_srgan_upscale_server_asks_the_same_sizes(served_sizes, tmp_path: Path):
    src = tmp_path / "pic.png"
    src.write_bytes(image_bytes(40, 30))
    for args, name, size in [(["--scale", "2.5"], "pic_x2.5.png", (100, 75)),
                             (["--width", "100"], "pic_100w.png", (100, 75)),
                             (["--max-side", "60"], "pic_max60.png", (60, 45))]:
        cli = subprocess.run([sys.executable, "-m", "cli.main", "upscale", "--server", served_sizes.url, str(src),
                              "-o", str(tmp_path / "out"), *args], capture_output=True, text=True, cwd=REPO,
                             timeout=120)
        assert cli.returncode == 0, cli.stderr
        assert Image.open(tmp_path / "out" / name).size == size
    refused = subprocess.run([sys.executable, "-m", "cli.main", "upscale", "--server", served_sizes.url, str(src),
                              "--width", "20"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "width=20" in refused.stderr


def test_the_web_page_asks_a_scale_or_a_size(served_sizes, browser, tmp_path: Path):
    picture = tmp_path / "p.png"
    picture.write_bytes(image_bytes(40, 30))
    page = browser.new_page()
    page.goto(served_sizes.url + "/")
    wait_in_page(page, "document.getElementById('model-info').textContent.startsWith('Model:')")
    page.click("details.options summary")
    assert page.is_hidden("#size"), "the model's own scale needs no number"
    page.select_option("#size-by", "width")
    page.fill("#size", "100")
    page.set_input_files("#file", str(picture))
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    info = page.inner_text("#result-info")
    assert "40×30 → 100×75" in info and "near4:1" in info and "×4 output resized (lanczos)" in info, info
    assert page.get_attribute("#download", "download") == "p_100w.png"
    page.select_option("#size-by", "scale")
    assert page.input_value("#size") == "2"
    page.set_input_files("#file", [])
    page.set_input_files("#file", str(picture))
    wait_in_page(page, "document.getElementById('result-info').textContent.includes('→ 80×60')")
    assert "near2:1" in page.inner_text("#result-info"), "x2: the x2 model, its output as it is"
    page.close()
