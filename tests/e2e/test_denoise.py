"""The denoise control end to end: a model family (clean and real-world, each PSNR and GAN) in the registry of a
served stack; uploads as a user makes them (a clean PNG, JPEGs); the page's denoise control in a real browser.

The models are tiny conv nets of one architecture (``bench.tiny_models``); ``rw`` names ``psnr`` as its
``denoise_base``, ``rw_gan`` names ``rw`` as its ``detail_base`` and ``gan`` as its ``denoise_base``.
"""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from core.catalog.registry import Registry
from tests.e2e.conftest import start_served, wait_in_page
from tests.utils.models import publish_family
from tests.utils.service import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def served_family(tmp_path_factory):
    files = tmp_path_factory.mktemp("family")
    data_dir = tmp_path_factory.mktemp("served-family")
    publish_family(Registry(data_dir / "models"), files, {
        "psnr": {}, "gan": {"detail_base": "psnr"}, "rw": {"denoise_base": "psnr"},
        "rw_gan": {"detail_base": "rw", "denoise_base": "gan"}}, seed=30)
    with start_served(data_dir, "psnr") as stack:
        yield stack


def _photo(quality: int | None) -> tuple[bytes, str]:
    y, x = np.mgrid[0:48, 0:64]
    img = Image.fromarray(np.stack([x * 4, y * 5, 60 + 0 * x], axis=2).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, "PNG" if quality is None else "JPEG", **({} if quality is None else {"quality": quality}))
    return buf.getvalue(), "image/png" if quality is None else "image/jpeg"


def _run(client: httpx.Client, upload: tuple[bytes, str], **fields) -> tuple[dict, np.ndarray]:
    data, media = upload
    name = "in.png" if media == "image/png" else "in.jpg"
    response = client.post("/v1/jobs", files={"file": (name, data, media)},
                           data={k: str(v) for k, v in fields.items()})
    assert response.status_code == 202, response.text
    job = wait_for(client, response.headers["location"])
    assert job["status"] == "succeeded", job
    result = Image.open(io.BytesIO(client.get(job["links"]["result"]).content)).convert("RGB")
    return job, np.asarray(result).astype(int)


def test_auto_leaves_a_clean_png_to_the_clean_model_and_restores_a_jpeg(served_family):
    with httpx.Client(base_url=served_family.url, timeout=60) as client:
        models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        assert models["rw"]["denoise_base"] == "psnr" and models["psnr"]["denoise_base"] is None
        png = _photo(None)
        _, clean_out = _run(client, png, model="psnr")
        job, auto_out = _run(client, png, model="rw")  # denoise left out: auto
        assert job["model"]["denoise"]["value"] == 0.0
        assert job["model"]["denoise"]["from"].startswith("auto: no jpeg tables, noise ")
        assert job["model"]["denoise_base"] == "psnr:1"
        assert np.abs(auto_out - clean_out).max() <= 1, "a clean PNG comes out as the clean model makes it"

        jpeg = _photo(35)
        job, restored = _run(client, jpeg, model="rw", denoise="auto")
        assert job["model"]["denoise"]["from"].startswith("auto: jpeg q35, noise ")
        assert job["model"]["denoise"]["value"] > 0.5
        _, kept = _run(client, jpeg, model="rw", denoise=0)
        _, full = _run(client, jpeg, model="rw", denoise=1)
        assert np.abs(restored - kept).max() > 1 and np.abs(full - kept).max() > 1

        job, _ = _run(client, jpeg, model="rw_gan", denoise=0.4, detail=0.5)
        assert job["model"]["denoise"] == {"value": 0.4, "from": "asked"}
        assert (job["model"]["detail"], job["model"]["detail_base"], job["model"]["denoise_base"]) == \
            (0.5, "rw:1", "gan:1")
        # a model with no denoise control runs as it is under auto
        job, _ = _run(client, jpeg, model="psnr")
        assert job["model"].get("denoise") is None


@pytest.mark.parametrize(("fields", "words"), [
    ({"model": "rw", "denoise": "strong"}, "denoise"),
    ({"model": "rw", "denoise": "1.5"}, "denoise"),
    ({"model": "psnr", "denoise": "0.5"}, "no denoise control"),
])
def test_a_bad_denoise_is_a_422_that_names_it(served_family, fields, words):
    with httpx.Client(base_url=served_family.url, timeout=60) as client:
        data, media = _photo(None)
        response = client.post("/v1/jobs", files={"file": ("in.png", data, media)}, data=fields)
        assert response.status_code == 422, response.text
        assert words in response.json()["error"]["message"]


def test_the_page_offers_denoise_for_a_family_model_and_says_what_ran(served_family, browser, tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(_photo(40)[0])
    page = browser.new_page()
    try:
        page.goto(served_family.url + "/")
        page.wait_for_selector("#model option[value=rw]", state="attached")
        assert page.is_hidden("#denoise-row")
        page.select_option("#model", "rw")
        assert page.is_visible("#denoise-row")
        assert page.is_disabled("#denoise") and page.inner_text("#denoise-value") == "auto"
        page.set_input_files("#file", str(path))
        page.wait_for_selector("#result:not([hidden])", timeout=60_000)
        assert "denoise" in page.inner_text("#result-info") and "auto: jpeg q40" in page.inner_text("#result-info")
        page.uncheck("#denoise-auto")
        assert not page.is_disabled("#denoise")
        page.fill("#denoise", "0.25")
        page.dispatch_event("#denoise", "input")
        assert page.inner_text("#denoise-value") == "0.25"
        again = tmp_path / "photo2.jpg"
        again.write_bytes(path.read_bytes())
        page.set_input_files("#file", str(again))
        wait_in_page(page, "document.querySelector('#result-info').textContent.includes('(asked)')",
                               timeout=60_000)
        assert "denoise 0.25 (asked)" in page.inner_text("#result-info")
        page.select_option("#model", "psnr")
        assert page.is_hidden("#denoise-row")
    finally:
        page.close()
