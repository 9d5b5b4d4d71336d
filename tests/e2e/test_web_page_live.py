"""The web page's live parts in a real browser against `srgan serve`: SSE progress, the smooth "before",
zoom and pan, batches with per-file progress and a zip, and the history of this browser's jobs."""

from __future__ import annotations

import calendar
import io
import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.e2e.conftest import wait_in_page
from tests.utils.service import image_bytes

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

def checkerboard(path: Path, size: int = 64, cell: int = 4) -> None:
    yy, xx = np.mgrid[0:size, 0:size]
    board = (((yy // cell) + (xx // cell)) % 2 * 255).astype(np.uint8)
    Image.fromarray(np.stack([board] * 3, axis=-1)).save(path)


def test_one_image_follows_its_events_and_compares_smoothly(served, browser, tmp_path: Path):
    picture = tmp_path / "board.png"
    checkerboard(picture, size=256)  # 64 tiles of 32 px at 20 ms each: the job runs for over a second
    page = browser.new_page()
    requests: list[str] = []
    missing: list[str] = []
    page.on("request", lambda r: requests.append(f"{r.method} {r.url}"))
    page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
    page.goto(served.url + "/")
    wait_in_page(page, "document.getElementById('model-info').textContent.startsWith('Model:')")
    page.set_input_files("#file", str(picture))
    wait_in_page(page, "document.getElementById('status').textContent.startsWith('Upscaling')", timeout=30_000)
    # the time left, from the worker's measured speed on this job's tiles
    wait_in_page(page, "/Upscaling… \\d+%, (about \\d+ (s|min)|less than a second) left/"
                 ".test(document.getElementById('status').textContent)", timeout=30_000)
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    assert missing == [], f"404s while the page loaded and ran: {missing}"  # /favicon.ico among them before
    icon = page.request.get(served.url + "/favicon.ico")
    assert icon.status == 200 and icon.headers["content-type"].startswith("image/")
    assert page.inner_text("#status") == "Done."

    job_gets = [r for r in requests if r.startswith("GET ") and "/v1/jobs/" in r and "/result" not in r]
    assert any(r.endswith("/events") for r in job_gets), requests
    # the history list reads the job when it is made and when it ends, the page once at the end;
    # polling every 300 ms through the job's ~1.3 s of tiles would add 4 or more
    assert len([r for r in job_gets if not r.endswith("/events")]) <= 3, f"polled: {job_gets}"
    posts = [r for r in requests if r.startswith("POST ")]
    assert len(posts) == 1

    # the "before" is drawn smoothly: between the black and white cells there are greys, unlike nearest-neighbour
    values = page.evaluate("""() => {
        const c = document.getElementById('before');
        const row = c.getContext('2d').getImageData(0, 40, c.width, 1).data;
        const out = []; for (let i = 0; i < row.length; i += 4) out.push(row[i]); return [c.width, c.height, out];
    }""")
    width, height, row = values
    assert (width, height) == (1024, 1024)
    greys = [v for v in row if 20 < v < 235]
    assert len(greys) > 100, "a smooth filter leaves grey ramps at every cell edge"

    # fit to the page first, then 100%: one image pixel per screen pixel, and dragging pans
    fitted = page.eval_on_selector("#after", "img => img.getBoundingClientRect().width")
    assert fitted < 1024
    page.click("#zoom")
    assert page.eval_on_selector("#after", "img => img.getBoundingClientRect().width") == 1024
    assert page.get_attribute("#zoom", "aria-pressed") == "true"
    page.locator("#viewport").scroll_into_view_if_needed()
    before = page.eval_on_selector("#viewport", "v => [v.scrollLeft, v.scrollTop]")
    box = page.locator("#viewport").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 - 40, box["y"] + box["height"] / 2 - 100, steps=5)
    page.mouse.up()
    after = page.eval_on_selector("#viewport", "v => [v.scrollLeft, v.scrollTop]")
    assert after == [pytest.approx(before[0] + 40, abs=2), pytest.approx(before[1] + 100, abs=2)], (before, after)
    page.fill("#split", "30")
    assert page.eval_on_selector("#before-clip", "el => el.style.clipPath") == "inset(0px 70% 0px 0px)"
    page.click("#zoom")
    assert page.eval_on_selector("#after", "img => img.getBoundingClientRect().width") == fitted
    page.close()


def test_a_batch_shows_each_file_and_downloads_a_zip_and_the_history_remembers(served, browser, tmp_path: Path):
    files = []
    for name, data in [("a.png", image_bytes(40, 30, seed=1)), ("b.jpg", image_bytes(24, 24, fmt="JPEG", seed=2)),
                       ("notes.png", b"not a picture")]:
        (tmp_path / name).write_bytes(data)
        files.append(str(tmp_path / name))
    page = browser.new_page(accept_downloads=True)
    page.goto(served.url + "/")
    page.evaluate("localStorage.removeItem('srgan-history')")
    page.set_input_files("#file", files)
    page.wait_for_selector("#batch:not([hidden])", timeout=30_000)
    wait_in_page(page, "document.getElementById('batch-summary').textContent.startsWith('3 of 3 done')",
                 timeout=60_000)
    rows = page.eval_on_selector_all("#batch-list tbody tr", """rows => rows.map(r => [
        r.cells[0].textContent, r.querySelector('.status').textContent, r.querySelector('progress').value])""")
    assert [r[0] for r in rows] == ["a.png", "b.jpg", "notes.png"]
    assert rows[0][1:] == ["succeeded", 1] and rows[1][1:] == ["succeeded", 1]
    assert rows[2][1].startswith("failed: ") and "not an image" in rows[2][1]
    assert page.inner_text("#batch-summary") == "3 of 3 done, 1 failed"
    assert page.eval_on_selector("#batch-progress", "p => p.value") == 1

    with page.expect_download() as info:
        page.click("#archive")
    saved = tmp_path / "batch.zip"
    info.value.save_as(saved)
    with zipfile.ZipFile(saved) as z:
        assert sorted(z.namelist()) == ["a_x4.png", "b_x4.jpg"]
        assert Image.open(io.BytesIO(z.read("a_x4.png"))).size == (160, 120)
        dated = calendar.timegm((*z.getinfo("a_x4.png").date_time, 0, 0, 0))  # the entry's time is UTC
        assert abs(dated - time.time()) < 600, z.getinfo("a_x4.png").date_time  # the job's finish, not 1980
    bars = page.eval_on_selector_all("#batch-list tbody tr", "rows => rows.map(r => r.querySelector('progress')"
                                                               ".checkVisibility())")
    assert bars == [True, True, False]  # a failed file has no full (done-looking) progress bar

    page.click("#batch-list tbody tr:first-child button")
    page.wait_for_selector("#result:not([hidden])")
    assert "40×30 → 160×120" in page.inner_text("#result-info")

    page.reload()
    wait_in_page(page, "[...document.querySelectorAll('#history .status')].every(s => s.textContent !== '…')")
    items = page.eval_on_selector_all("#history li", "lis => lis.map(li => li.textContent)")
    assert len(items) == 3
    assert sum("succeeded" in item for item in items) == 2 and sum("failed" in item for item in items) == 1
    links = page.eval_on_selector_all("#history li a", "as => as.map(a => a.href)")
    assert len(links) == 2 and all("/v1/links/" in href and "signature=" in href for href in links)
    page.close()


def test_a_batch_where_nothing_succeeded_offers_no_zip(served, browser, tmp_path: Path):
    files = []
    for name in ("x.png", "y.png"):
        (tmp_path / name).write_bytes(b"not a picture at all")
        files.append(str(tmp_path / name))
    page = browser.new_page()
    page.goto(served.url + "/")
    page.set_input_files("#file", files)
    wait_in_page(page, "document.getElementById('batch-summary').textContent.startsWith('2 of 2 done')",
                           timeout=60_000)
    assert page.inner_text("#batch-summary") == "2 of 2 done, 2 failed"
    assert not page.is_visible("#archive")  # hidden, although a .button rule sets its display
    page.close()


def test_the_header_names_the_model_offered_now(served, browser, tmp_path: Path):
    """After a deploy the header names the new version once the page uploads (or is shown) again."""
    picture = tmp_path / "small.png"
    picture.write_bytes(image_bytes(16, 16, seed=3))
    page = browser.new_page()
    page.goto(served.url + "/")
    wait_in_page(page, "document.getElementById('model-info').textContent.startsWith('Model:')")
    first = page.inner_text("#model-info")
    listing = page.request.get(served.url + "/v1/models").json()
    for model in listing["models"]:
        if model["default"]:
            model["version"] = "deployed-since"  # what /v1/models answers after `srgan deploy`

    page.route("**/v1/models", lambda route: route.fulfill(status=200, content_type="application/json",
                                                          body=json.dumps(listing)))
    page.set_input_files("#file", str(picture))
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    wait_in_page(page, "document.getElementById('model-info').textContent.includes('deployed-since')")
    assert page.inner_text("#model-info") != first
    page.close()
