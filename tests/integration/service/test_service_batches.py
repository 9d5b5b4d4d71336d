"""Batches: several files in one request, one job each; the list, the overall progress and the zip."""

from __future__ import annotations

import io
import json
import time
import uuid
import zipfile
from typing import Any

import pytest
from PIL import Image

from tests.integration.service.conftest import BACKENDS
from tests.utils.service import image_bytes, png_header_only, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
STORAGE_BACKENDS = BACKENDS


def post_batch(client, files: list[tuple[str, bytes]], headers=None, **fields):
    parts: list[tuple[str, tuple[str | None, Any] | tuple[str, bytes, str]]] = [
        ("file", (name, data, "application/octet-stream")) for name, data in files]
    parts += [(k, (None, str(v))) for k, v in fields.items()]
    return client.post("/v1/batches", files=parts, headers=headers or {})


def test_a_mixed_batch_runs_the_good_files_and_fails_the_bad_ones_clearly(client):
    good = [("cat.png", image_bytes(20, 16, seed=1)), ("dog.jpg", image_bytes(12, 8, fmt="JPEG", seed=2)),
            ("cat.png", image_bytes(8, 8, seed=3))]  # the same name twice
    bad = [("notes.txt", b"just some text"), ("bomb.png", png_header_only(40_000, 40_000)), ("empty.png", b"")]
    response = post_batch(client, [good[0], bad[0], good[1], bad[1], good[2], bad[2]], format="png")
    assert response.status_code == 202, response.text
    batch = response.json()
    assert response.headers["location"] == f"/v1/batches/{batch['id']}"
    names = [job["input"]["filename"] for job in batch["jobs"]]
    assert names == ["cat.png", "notes.txt", "dog.jpg", "bomb.png", "cat.png", "empty.png"], "upload order"
    assert all(job["batch_id"] == batch["id"] for job in batch["jobs"])
    failed = {job["input"]["filename"]: job for job in batch["jobs"] if job["status"] == "failed"}
    assert set(failed) == {"notes.txt", "bomb.png", "empty.png"}
    assert failed["notes.txt"]["error"]["code"] == "unsupported_format"
    assert failed["bomb.png"]["error"]["code"] == "image_too_large"
    assert failed["empty.png"]["error"]["code"] in ("invalid_image", "unsupported_format")
    assert batch["counts"]["failed"] == 3 and batch["status"] == "running"

    def completed():
        body = client.get(batch["links"]["self"]).json()
        return body if body["status"] == "completed" else None

    done = wait_until(completed, what="the batch to complete")
    assert done["progress"] == 1 and done["counts"] == {"succeeded": 3, "failed": 3}

    archive = client.get(batch["links"]["archive"])
    assert archive.status_code == 200 and archive.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.content)) as z:
        assert sorted(z.namelist()) == ["cat_x4 (2).png", "cat_x4.png", "dog_x4.png"]
        by_name = {job["output"]["filename"]: job for job in done["jobs"] if job["status"] == "succeeded"}
        assert z.read("cat_x4.png") == client.get(done["jobs"][0]["links"]["result"]).content
        assert z.read("dog_x4.png") == client.get(by_name["dog_x4.png"]["links"]["result"]).content
        assert Image.open(io.BytesIO(z.read("cat_x4 (2).png"))).size == (32, 32)
    for job in failed.values():  # the bad files' jobs answer like any failed job
        again = client.get(job["links"]["self"]).json()
        assert again["status"] == "failed" and again["started_at"] is None


def test_progress_is_the_mean_of_the_jobs(client):
    batch = post_batch(client, [("a.png", image_bytes(160, 160, seed=4)), ("b.png", image_bytes(160, 160, seed=5))]
                       ).json()
    early = client.get(batch["links"]["archive"])
    assert early.status_code == 409 and early.json()["error"]["code"] == "nothing_ready"
    seen = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body = client.get(batch["links"]["self"]).json()
        seen.append(body["progress"])
        if body["status"] == "completed":
            break
        time.sleep(0.1)
    assert seen[-1] == 1 and seen == sorted(seen)
    assert any(0 < p < 0.5 for p in seen) and any(0.5 <= p < 1 for p in seen), seen


def test_limits_idempotency_and_unknown_batches(client, service):
    limit = service.settings.max_batch_files
    too_many = post_batch(client, [(f"{i}.png", image_bytes(4, 4)) for i in range(limit + 1)])
    assert too_many.status_code == 422 and too_many.json()["error"]["code"] == "too_many_files"
    assert post_batch(client, [], scale=2).status_code == 422
    bad_param = post_batch(client, [("a.png", image_bytes(4, 4))], scale=99)
    assert bad_param.status_code == 422, "a bad parameter is the whole request's fault"
    key = str(uuid.uuid4())
    files = [("a.png", image_bytes(6, 6, seed=8)), ("b.png", image_bytes(6, 6, seed=9))]
    first = post_batch(client, files, headers={"Idempotency-Key": key})
    again = post_batch(client, files, headers={"Idempotency-Key": key})
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert post_batch(client, files[:1], headers={"Idempotency-Key": key}).status_code == 409
    assert client.get(f"/v1/batches/{uuid.uuid4()}").status_code == 404
    assert client.get("/v1/batches/nope/archive").status_code == 404
    two = client.post("/v1/jobs", files=[("file", ("a.png", image_bytes(4, 4))),
                                         ("file", ("b.png", image_bytes(4, 4)))])
    assert two.status_code == 422 and "/v1/batches" in two.json()["error"]["message"]


def test_the_batch_event_stream_follows_every_job_to_its_end(client):
    batch = post_batch(client, [("a.png", image_bytes(96, 96, seed=6)), ("bad.png", b"nope"),
                                ("b.png", image_bytes(64, 64, seed=7))]).json()
    events: list[tuple[str | None, Any]] = []
    current: dict[str, Any] = {}
    with client.stream("GET", batch["links"]["events"]) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line == "" and "data" in current:
                events.append((current.get("event"), json.loads(current["data"])))
                current = {}
            elif line and not line.startswith(":"):
                field, _, value = line.partition(":")
                current[field] = value.strip()
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "snapshot" and kinds[-1] == "snapshot" and set(kinds[1:-1]) == {"job"}
    assert [j["input"]["filename"] for j in events[0][1]["jobs"]] == ["a.png", "bad.png", "b.png"]
    assert events[-1][1]["status"] == "completed" and events[-1][1]["progress"] == 1
    good = [j["id"] for j in events[0][1]["jobs"] if j["status"] != "failed"]
    for job_id in good:
        mine = [e for kind, e in events if kind == "job" and e["job_id"] == job_id]
        assert [e["seq"] for e in mine] == sorted(e["seq"] for e in mine)
        assert mine[-1]["status"] == "succeeded"
        assert any(e["type"] == "progress" for e in mine)


def _frames() -> bytes:
    first, second = (Image.open(io.BytesIO(image_bytes(16, 16, seed=s))) for s in (1, 2))
    buf = io.BytesIO()
    first.save(buf, "PNG", save_all=True, append_images=[second])
    return buf.getvalue()


def test_batch_files_get_the_upload_integrity_and_frame_checks(client):
    whole = image_bytes(64, 64, fmt="JPEG", seed=4)
    files = [("cut.jpg", whole[: len(whole) * 9 // 10]), ("anim.png", _frames()), ("ok.png", image_bytes(8, 8))]
    response = post_batch(client, files)
    assert response.status_code == 202, response.text
    jobs = {job["input"]["filename"]: job for job in response.json()["jobs"]}
    assert jobs["cut.jpg"]["status"] == "failed" and jobs["cut.jpg"]["error"]["code"] == "invalid_image"
    assert jobs["anim.png"]["status"] == "failed" and jobs["anim.png"]["error"]["code"] == "multi_frame"
    assert jobs["ok.png"]["status"] in ("queued", "running", "succeeded")


def test_a_batch_without_its_closing_boundary_is_refused(client, service):
    body = (b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n"
            + image_bytes(8, 8) + b"\r\n")
    response = client.post("/v1/batches", content=body, headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_multipart", response.text
    assert "closing boundary" in response.json()["error"]["message"]
    assert list((service.storage_dir / ".incoming").iterdir()) == [], "its files are removed"
