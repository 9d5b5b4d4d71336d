"""The detail control end to end: a PSNR model and its GAN fine-tune in the registry of a served stack.

``gan`` is a fine-tune of ``psnr`` (same graph, other weights; its card names
``psnr`` as ``detail_base``). Jobs ask for ``detail``; the page shows a model
picker and, for ``gan``, a detail slider.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from core.catalog.registry import Registry
from tests.e2e.conftest import start_served, wait_in_page
from tests.utils.models import publish_family
from tests.utils.service import REPO, image_bytes, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def served_pair(tmp_path_factory):
    files = tmp_path_factory.mktemp("pair")
    data_dir = tmp_path_factory.mktemp("served-pair")
    publish_family(Registry(data_dir / "models"), files, {"psnr": {}, "gan": {"detail_base": "psnr"}})
    with start_served(data_dir, "psnr") as stack:
        yield stack


def _run(client: httpx.Client, upload: bytes, **fields) -> tuple[dict, Image.Image]:
    response = client.post("/v1/jobs", files={"file": ("in.png", upload, "image/png")},
                           data={k: str(v) for k, v in fields.items()})
    assert response.status_code == 202, response.text
    job = wait_for(client, response.headers["location"])
    assert job["status"] == "succeeded", job
    return job, Image.open(io.BytesIO(client.get(job["links"]["result"]).content))


def test_detail_0_is_the_psnr_model_1_the_gan_model_and_the_record_says_so(served_pair):
    upload = image_bytes(40, 30)
    with httpx.Client(base_url=served_pair.url, timeout=60) as client:
        models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        assert models["gan"]["detail_base"] == "psnr" and models["psnr"]["detail_base"] is None
        _, psnr = _run(client, upload, model="psnr")
        _, gan = _run(client, upload, model="gan")
        job0, at0 = _run(client, upload, model="gan", detail=0)
        _, at1 = _run(client, upload, model="gan", detail=1)
        job_half, half = _run(client, upload, model="gan", detail=0.52)
    assert np.array_equal(np.asarray(at0), np.asarray(psnr))
    assert np.array_equal(np.asarray(at1), np.asarray(gan))
    assert not np.array_equal(np.asarray(half), np.asarray(psnr))
    assert not np.array_equal(np.asarray(half), np.asarray(gan))
    assert job0["model"]["detail"] == 0.0 and job0["model"]["detail_base"] == "psnr:1"
    assert job_half["model"]["detail"] == 0.5 and job_half["params"]["detail"] == 0.5
    assert job_half["model"]["detail_target"] == "gan:1"
    provenance = json.loads(half.info["srgan"])
    assert provenance == {"model": "gan:1", "detail": 0.5, "detail_base": "psnr:1", "detail_target": "gan:1"}


@pytest.mark.parametrize(("fields", "message"), [
    ({"model": "psnr", "detail": "0.5"}, "no detail control"),
    ({"model": "gan", "detail": "1.5"}, "detail"),
])
def test_detail_where_it_cannot_apply_is_refused(served_pair, fields, message):
    with httpx.Client(base_url=served_pair.url, timeout=30) as client:
        response = client.post("/v1/jobs", files={"file": ("in.png", image_bytes(20, 20), "image/png")}, data=fields)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_parameter"
    assert message in response.json()["error"]["message"]


def test_a_batch_and_srgan_upscale_server_pass_detail_on(served_pair, tmp_path: Path):
    upload = image_bytes(40, 30, seed=7)
    with httpx.Client(base_url=served_pair.url, timeout=60) as client:
        _, psnr = _run(client, upload, model="psnr")
        made = client.post("/v1/batches", data={"model": "gan", "detail": "0"},
                           files=[("file", ("a.png", upload, "image/png")), ("file", ("b.png", upload, "image/png"))])
        assert made.status_code == 202, made.text
        assert [job["params"]["detail"] for job in made.json()["jobs"]] == [0.0, 0.0]
        for job in made.json()["jobs"]:
            done = wait_for(client, job["links"]["self"])
            assert done["status"] == "succeeded" and done["model"]["detail_base"] == "psnr:1", done
            result = Image.open(io.BytesIO(client.get(done["links"]["result"]).content))
            assert np.array_equal(np.asarray(result), np.asarray(psnr)), "detail 0 is the PSNR model"
        refused = client.post("/v1/batches", data={"model": "psnr", "detail": "0.5"},
                              files=[("file", ("a.png", upload, "image/png"))])
        assert refused.status_code == 422 and "no detail control" in refused.json()["error"]["message"]

    src, out = tmp_path / "in.png", tmp_path / "out.png"
    src.write_bytes(upload)
    cli = subprocess.run([sys.executable, "-m", "cli.main", "upscale", "--server", served_pair.url, str(src),
                          "-o", str(out), "--model", "gan", "--detail", "0"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(psnr)), "--detail 0 went to the server"
    assert json.loads(Image.open(out).info["srgan"])["detail"] == 0.0


def test_web_page_picker_and_detail_slider(served_pair, browser, tmp_path: Path):
    picture = tmp_path / "p.png"
    picture.write_bytes(image_bytes(24, 20))
    page = browser.new_page()
    page.goto(served_pair.url + "/")
    wait_in_page(page, "document.querySelectorAll('#model option').length >= 2")
    assert page.is_hidden("#detail-row"), "psnr, the default, has no detail control"
    page.select_option("#model", "gan")
    assert page.is_visible("#detail-row")
    page.fill("#detail", "0.25")
    assert page.inner_text("#detail-value") == "0.25"
    page.set_input_files("#file", str(picture))
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    assert "gan:1, detail 0.25" in page.inner_text("#result-info")
    page.select_option("#model", "psnr")
    assert page.is_hidden("#detail-row")
    page.close()
