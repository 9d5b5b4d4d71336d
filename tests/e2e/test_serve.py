"""`srgan serve` with nothing configured: one command gives a working service, and stopping it stops everything.

The tests in this module share one served stack and run in order; the last one stops it.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.e2e.conftest import upscale_a_jpeg, wait_in_page
from tests.utils.service import image_bytes

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

def test_serve_starts_redis_a_worker_and_the_api(served):
    names = " ".join(" ".join(p.cmdline()) for p in served.descendants())
    assert "redis-server" in names and "celery" in names and "worker.celery_app" in names
    with httpx.Client(base_url=served.url, timeout=30) as client:
        upscale_a_jpeg(client)
    assert (served.data_dir / "redis").is_dir(), "the embedded Redis keeps its data in the data directory"


def test_web_page_upload_progress_compare_and_download(served, browser, tmp_path: Path):
    picture = tmp_path / "small picture.png"
    picture.write_bytes(image_bytes(48, 40, "RGB", seed=7))
    page = browser.new_page(accept_downloads=True)
    refused = []  # what the page's Content-Security-Policy blocked, if anything
    page.on("console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text
            else None)
    page.goto(served.url + "/")
    wait_in_page(page, "document.getElementById('model-info').textContent.startsWith('Model: nearest')")
    page.set_input_files("#file", str(picture))
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)
    assert page.inner_text("#status") == "Done."
    assert page.eval_on_selector("#progress", "p => p.value") == 1
    assert "48×40 → 192×160" in page.inner_text("#result-info")
    after = page.eval_on_selector("#after", "img => [img.naturalWidth, img.naturalHeight]")
    assert after == [192, 160]

    page.fill("#slider", "20")
    assert page.eval_on_selector("#before-clip", "el => el.style.clipPath") == "inset(0px 80% 0px 0px)"

    with page.expect_download() as info:
        page.click("#download")
    download = info.value
    assert download.suggested_filename == "small picture_x4.png"
    saved = tmp_path / "downloaded.png"
    download.save_as(saved)
    assert Image.open(saved).size == (192, 160)
    page.screenshot(path=str(served.data_dir / "web-page.png"), full_page=True)
    assert refused == [], refused
    page.close()


def test_web_page_shows_a_clear_error(served, browser, tmp_path: Path):
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("these are my notes, not a picture")
    page = browser.new_page()
    page.goto(served.url + "/")
    page.set_input_files("#file", str(not_an_image))
    page.wait_for_selector("#error:not([hidden])", timeout=15_000)
    assert "not an image in a supported format" in page.inner_text("#error")
    assert page.is_hidden("#result")
    page.close()


def test_stopping_serve_leaves_no_process_behind(served):
    pids = {p.pid for p in served.descendants()}
    assert len(pids) >= 3  # redis-server, the worker and its pool process
    assert served.stop() == 0, served.log_tail()
    assert served.leftovers() == [], f"still running: {served.leftovers()}"
