"""The job lifecycle over real HTTP, real Redis and a real worker process running a tiny ONNX model."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from api.queue import JobQueue
from core.catalog.shipped import shipped_models
from core.cleanup import sweep_expired
from core.jobs import JobStore
from core.keyspace import job_key
from tests.integration.service.conftest import BACKENDS
from tests.utils.service import exif_make_as_rational, image_bytes, wait_for, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
STORAGE_BACKENDS = BACKENDS  # the tests that use `service` run on the folder and on S3


def submit(client, data: bytes, name: str = "cat.png", **fields):
    return client.post("/v1/jobs", files={"file": (name, data, "application/octet-stream")},
                       data={k: str(v) for k, v in fields.items()})


def test_upload_poll_download_gives_the_model_output(client):
    src = image_bytes(40, 30, "RGB", seed=1)
    response = submit(client, src)
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["progress"] == 0
    assert job["input"] == {**job["input"], "width": 40, "height": 30, "format": "png", "mode": "RGB"}

    done = wait_for(client, response.headers["location"])
    assert done["status"] == "succeeded", done
    assert done["progress"] == 1 and done["attempts"] == 1
    assert done["model"]["name"] == "nearest" and done["model"]["version"] == "1"
    assert done["output"]["width"] == 160 and done["output"]["height"] == 120
    assert done["timings"]["engine_s"] >= 0

    result = client.get(done["links"]["result"])
    assert result.status_code == 200
    assert result.headers["content-type"] == "image/png"
    assert 'filename="cat_x4.png"' in result.headers["content-disposition"]
    out = Image.open(io.BytesIO(result.content))
    assert (out.size, out.mode) == ((160, 120), "RGB")
    lr = np.asarray(Image.open(io.BytesIO(src)))
    assert np.array_equal(np.asarray(out), lr.repeat(4, 0).repeat(4, 1))  # the nearest model is exact


@pytest.mark.parametrize(
    ("mode", "fmt", "fields", "media_type", "out_mode"),
    [
        ("L", "PNG", {}, "image/png", "L"),
        ("RGBA", "PNG", {}, "image/png", "RGBA"),
        ("RGB", "JPEG", {}, "image/jpeg", "RGB"),
        ("RGBA", "PNG", {"format": "webp", "quality": 100}, "image/webp", "RGBA"),
        ("RGB", "PNG", {"format": "JPG", "quality": 80}, "image/jpeg", "RGB"),
    ],
)
def test_modes_and_formats_are_kept_or_converted(client, mode, fmt, fields, media_type, out_mode):
    response = submit(client, image_bytes(24, 20, mode, fmt), name=f"x.{fmt.lower()}", **fields)
    assert response.status_code == 202, response.text
    done = wait_for(client, response.headers["location"])
    assert done["status"] == "succeeded", done
    result = client.get(done["links"]["result"])
    assert result.headers["content-type"] == media_type
    out = Image.open(io.BytesIO(result.content))
    assert (out.size, out.mode) == ((96, 80), out_mode)


def test_rgb_png_with_a_trns_colour_key_keeps_its_transparency(client):
    src = Image.open(io.BytesIO(image_bytes(10, 8, seed=3)))
    key = src.getpixel((2, 3))
    buf = io.BytesIO()
    src.save(buf, "PNG", transparency=key)
    done = wait_for(client, submit(client, buf.getvalue()).headers["location"])
    assert done["status"] == "succeeded", done
    out = Image.open(io.BytesIO(client.get(done["links"]["result"]).content))
    assert out.mode == "RGBA"
    keyed = np.all(np.asarray(src) == np.asarray(key), axis=2).repeat(4, 0).repeat(4, 1)
    np.testing.assert_array_equal(np.asarray(out.getchannel("A")) == 0, keyed)


def test_the_record_gives_the_input_size_as_displayed_and_its_orientation(client):
    """A phone photo stored 30x10 and turned by EXIF was recorded as 30x10 in and 40x120 out."""
    exif = Image.Exif()
    exif[0x0112] = 6  # a quarter turn clockwise on display
    buf = io.BytesIO()
    Image.open(io.BytesIO(image_bytes(30, 10))).save(buf, "JPEG", exif=exif.tobytes())
    response = submit(client, buf.getvalue(), name="phone.jpg")
    assert response.status_code == 202, response.text
    assert response.json()["input"] == {**response.json()["input"], "width": 10, "height": 30, "orientation": 6}
    done = wait_for(client, response.headers["location"])
    assert (done["input"]["width"] * 4, done["input"]["height"] * 4) == (done["output"]["width"],
                                                                       done["output"]["height"]) == (40, 120)


def test_exif_that_cannot_be_written_back_is_dropped_with_a_warning(client):
    buf = io.BytesIO()
    Image.open(io.BytesIO(image_bytes(10, 8))).save(buf, "PNG", exif=exif_make_as_rational())
    done = wait_for(client, submit(client, buf.getvalue()).headers["location"])
    assert done["status"] == "succeeded", done
    assert len(done["warnings"]) == 1 and "EXIF" in done["warnings"][0], done
    assert "exif" not in Image.open(io.BytesIO(client.get(done["links"]["result"]).content)).info


def test_requested_scale_resamples_the_model_output(client):
    response = submit(client, image_bytes(20, 10), scale=2)
    done = wait_for(client, response.headers["location"])
    assert done["status"] == "succeeded", done
    assert (done["output"]["width"], done["output"]["height"]) == (40, 20)
    assert done["output"]["filename"] == "cat_x2.png"


def test_progress_moves_from_zero_to_one(client):
    response = submit(client, image_bytes(160, 160))  # 25 tiles
    location = response.headers["location"]
    seen = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = client.get(location).json()
        seen.append(job["progress"])
        if job["status"] == "succeeded":
            break
        time.sleep(0.05)
    assert seen[-1] == 1.0
    assert seen == sorted(seen), "progress never goes back"
    assert any(0 < p < 1 for p in seen), f"no intermediate progress in {seen}"


def test_result_asked_for_too_early_is_409(client):
    response = submit(client, image_bytes(160, 160))
    early = client.get(response.headers["location"] + "/result")
    assert early.status_code == 409
    assert early.json()["error"]["code"] == "not_ready"
    assert early.headers["retry-after"]
    assert wait_for(client, response.headers["location"])["status"] == "succeeded"


def test_cancel_a_queued_job_at_once_and_a_running_one_at_its_next_tile(client):
    running = submit(client, image_bytes(160, 160)).headers["location"]
    queued = submit(client, image_bytes(32, 32)).headers["location"]
    wait_until(lambda: client.get(running).json()["progress"] > 0, what="the first job to start")
    assert client.get(queued).json()["status"] == "queued"  # prefetch 1: the worker holds one job

    canceled = client.delete(queued)
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"

    stopping = client.delete(running)
    assert stopping.status_code == 202, stopping.text
    assert stopping.json()["cancel_requested"] is True
    ended = wait_for(client, running)
    assert ended["status"] == "canceled" and ended["progress"] < 1

    never_ran = client.get(queued).json()
    assert never_ran["status"] == "canceled" and never_ran["started_at"] is None
    for location in (queued, running):
        result = client.get(location + "/result")
        assert result.status_code == 409 and result.json()["error"]["code"] == "job_canceled"
    again = client.delete(running)
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_finished"


@pytest.mark.parametrize("job_id", ["3f1b7e1c-0000-4000-8000-000000000000", "not-a-uuid", "..%2F..%2Fetc"])
def test_unknown_ids_are_404(client, job_id):
    for method, path in (("GET", ""), ("GET", "/result"), ("DELETE", "")):
        response = client.request(method, f"/v1/jobs/{job_id}{path}")
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "not_found"


def test_records_expire_and_their_files_are_swept(client, service):
    response = submit(client, image_bytes(16, 16))
    job = wait_for(client, response.headers["location"])
    key = job_key(job["id"])
    ttl = service.redis.ttl(key)
    assert 0 < ttl <= service.settings.job_ttl_s
    assert service.storage.files(job["id"]) == ["input", "result.png"]

    service.redis.pexpire(key, 1)  # as if its time to live had run out
    time.sleep(0.05)
    assert client.get(response.headers["location"]).status_code == 404
    assert client.get(response.headers["location"] + "/result").status_code == 404

    store = JobStore(service.redis, ttl_s=service.settings.job_ttl_s)
    report = sweep_expired(store, service.storage, grace_s=0)
    assert report.removed_jobs >= 1
    assert service.storage.files(job["id"]) == []


def test_a_task_delivered_twice_leaves_one_result(client, service):
    response = submit(client, image_bytes(16, 16))
    first = wait_for(client, response.headers["location"])
    queue = JobQueue(service.settings)
    try:
        queue.send(first["id"])  # the same job again, as a redelivery would
        queue.send(first["id"])
    finally:
        queue.close()
    wait_until(lambda: service.redis.llen(service.settings.queue) == 0, what="the duplicates to be consumed")
    time.sleep(0.3)
    again = client.get(response.headers["location"]).json()
    assert again["finished_at"] == first["finished_at"] and again["attempts"] == 1
    assert service.storage.files(first["id"]) == ["input", "result.png"]


def test_wait_returns_as_soon_as_the_job_ends(client):
    response = submit(client, image_bytes(16, 16))
    started = time.monotonic()
    job = client.get(response.headers["location"], params={"wait": 20}).json()
    assert job["status"] == "succeeded"
    assert time.monotonic() - started < 5


def test_models_health_readiness_and_metrics(client):
    job = wait_for(client, submit(client, image_bytes(8, 8)).headers["location"])
    assert job["model"]["precision"] == "f32", "auto on a CPU without bfloat16 units, recorded with the job"
    listing = client.get("/v1/models").json()
    models = listing["models"]
    assert listing["precision"] == "auto"
    assert models[0] == {"name": "nearest", "version": "1", "ref": "nearest:1", "scale": 4, "active": True,
                         "default": True, "metrics": {}, "source": "file", "published_at": None, "sha256": None,
                         "detail_base": None, "denoise_base": None, "tiling": None, "int8": None, "precision": "f32",
                         "precision_note": "auto: onnxruntime:CPUExecutionProvider runs f32 natively"}
    assert {m["name"] for m in models[1:]} == set(shipped_models()), "the registry holds the shipped models"
    assert all(m["source"] == "registry" and not m["default"] for m in models[1:])
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert {name for name, check in ready.json()["checks"].items() if check["ok"]} == {"redis", "storage", "workers"}

    wait_for(client, submit(client, image_bytes(8, 8)).headers["location"])
    text = client.get("/metrics").text
    for needle in ('srgan_jobs_total{status="succeeded"}', 'srgan_jobs_current{status="queued"}',
                   "srgan_queue_depth", "srgan_workers_alive 1.0",
                   'srgan_job_duration_seconds_count{phase="run",status="succeeded"}',
                   'srgan_http_requests_total{method="POST",route="/v1/jobs",status="202"}'):
        assert needle in text, needle
    assert client.get("/docs").status_code == 200
    assert "multipart/form-data" in str(client.get("/openapi.json").json()["paths"]["/v1/jobs"]["post"])


def test_readiness_fails_without_workers_and_a_full_queue_answers_429(redis_db, make_settings):
    from tests.utils.service import LiveApi

    api = LiveApi(make_settings(redis_db(), max_queued_jobs=1)).start()  # a database no worker serves
    try:
        with api.client() as c:
            ready = c.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["workers"]["ok"] is False
            assert submit(c, image_bytes(8, 8)).status_code == 202
            full = submit(c, image_bytes(8, 8))
            assert full.status_code == 429 and full.json()["error"]["code"] == "queue_full"
            assert full.headers["retry-after"]
    finally:
        api.stop()


def test_api_keys_when_configured(redis_db, make_settings):
    from tests.utils.service import LiveApi

    api = LiveApi(make_settings(redis_db(), api_keys=["s3cret"])).start()
    try:
        with api.client() as c:
            assert c.get("/v1/models").status_code == 401
            assert c.get("/v1/models", headers={"X-API-Key": "nope"}).status_code == 403
            assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
            assert submit(c, image_bytes(8, 8)).json()["error"]["code"] == "unauthorized"
            assert c.get("/healthz").status_code == 200  # probes stay open
    finally:
        api.stop()
