"""Both storage backends keep the same promises, the S3 one on a real server (SeaweedFS): inputs adopted from
the spool, results that replace each other and keep their type and name, sweeping, readiness, big objects in
parts, and a broker message that carries only the job's id."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import httpx
import pytest

from core.cleanup import sweep_expired
from core.job_record import new_job_id
from core.settings import Settings
from core.storage import MULTIPART_THRESHOLD, FolderStorage, InputMissing, S3Storage, Storage, open_storage

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(params=["folder", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "folder":
        return FolderStorage(tmp_path / "jobs").ensure()
    store = request.getfixturevalue("object_store")
    settings = Settings(_env_file=None, data_dir=tmp_path, storage_url=f"s3://{store.new_bucket()}/some/prefix",
                        s3_endpoint_url=store.endpoint_url)
    return open_storage(settings).ensure()


def adopt(storage: Storage, data: bytes) -> str:
    job_id = new_job_id()
    incoming, fh = storage.open_incoming()
    with fh:
        fh.write(data)
    storage.adopt_input(job_id, incoming)
    assert not incoming.exists(), "the spool file is gone once adopted"
    return job_id


def test_an_adopted_input_is_read_back_and_results_replace_each_other(storage):
    job_id = adopt(storage, b"image bytes")
    with storage.input_file(job_id) as path:
        assert path.read_bytes() == b"image bytes"
    assert list(storage.incoming_dir.iterdir()) == [], "a received upload is gone once adopted"
    if isinstance(storage, S3Storage):
        assert list(storage.inputs_dir.iterdir()) == [], "a downloaded input is removed after use"

    storage.write_result(job_id, b"first", "png", media_type="image/png", filename="a_x4.png")
    storage.write_result(job_id, b"third", "webp", media_type="image/webp", filename="a_x4.webp")  # a redelivery
    assert storage.files(job_id) == ["input", "result.webp"]
    assert storage.open_result(job_id, "png") is None
    stored = storage.open_result(job_id, "webp")
    assert stored is not None and stored.size == 5 and b"".join(stored.chunks()) == b"third"

    storage.discard_result(job_id)
    assert storage.files(job_id) == ["input"]
    storage.remove(job_id)
    assert storage.files(job_id) == []
    with pytest.raises(InputMissing), storage.input_file(job_id):
        pass


def test_sweep_removes_the_files_of_jobs_without_a_record(storage):
    live, expired = adopt(storage, b"a"), adopt(storage, b"b")

    class Records:
        def existing(self, ids):
            return {i: i == live for i in ids}

        def prune_state_sets(self) -> int:
            return 0

    assert {job_id for job_id, _ in storage.job_dirs()} == {live, expired}
    assert all(abs(mtime - time.time()) < 120 for _, mtime in storage.job_dirs())
    report = sweep_expired(Records(), storage, grace_s=0)  # type: ignore[arg-type]
    assert report.removed_jobs == 1
    assert storage.files(live) == ["input"] and storage.files(expired) == []


def test_writable_check_passes_and_fails_with_the_store(storage, tmp_path):
    storage.check_writable()
    if isinstance(storage, S3Storage):
        missing = S3Storage(f"no-such-bucket-{uuid.uuid4().hex[:8]}", spool=tmp_path / "spool",
                            endpoint_url=storage.endpoint_url)
        with pytest.raises(OSError, match="NoSuchBucket"):
            missing.check_writable()


def test_big_objects_go_up_in_parts_and_keep_type_and_name(object_store, tmp_path):
    bucket = object_store.new_bucket()
    storage = S3Storage(bucket, "p", spool=tmp_path, endpoint_url=object_store.endpoint_url).ensure()
    big = os.urandom(2 * MULTIPART_THRESHOLD + 123)
    job_id = adopt(storage, big)
    storage.write_result(job_id, big, "png", media_type="image/png", filename="été_x4.png")
    head = object_store.client().head_object(Bucket=bucket, Key=f"p/{job_id}/result.png")
    assert head["ContentType"] == "image/png"
    assert head["ContentDisposition"] == "attachment; filename=\"_t__x4.png\"; filename*=UTF-8''%C3%A9t%C3%A9_x4.png"
    assert head["ETag"].strip('"').endswith("-3"), "a multipart upload of three parts"
    input_head = object_store.client().head_object(Bucket=bucket, Key=f"p/{job_id}/input")
    assert input_head["ETag"].strip('"').endswith("-3") and input_head["ContentLength"] == len(big)
    with storage.input_file(job_id) as path:
        assert path.stat().st_size == len(big) and path.read_bytes() == big
    url = storage.presign_result(job_id, "png", expires_in_s=60, media_type="image/png", filename="x.png")
    assert url is not None and httpx.get(url).content == big


def test_the_broker_message_carries_only_the_id_under_2_kb(redis_db, tmp_path):
    """What a worker on another host receives: ids, never the image (which stays in the store)."""
    import redis

    from api.queue import JobQueue

    settings = Settings(_env_file=None, redis_url=redis_db(), data_dir=tmp_path)
    queue = JobQueue(settings)
    job_id = new_job_id()
    try:
        queue.send(job_id)
    finally:
        queue.close()
    assert settings.redis_url is not None
    client = redis.Redis.from_url(settings.redis_url)
    (message,) = [m if isinstance(m, bytes) else m.encode() for m in client.lrange(settings.queue, 0, -1)]
    assert len(message) < 2048, f"{len(message)} bytes"
    body = json.loads(message)
    assert job_id in message.decode() and body["headers"]["task"] == "srgan.upscale"


def test_a_download_left_by_a_killed_attempt_is_discarded_by_the_next(object_store, tmp_path):
    storage = S3Storage(object_store.new_bucket(), spool=tmp_path, endpoint_url=object_store.endpoint_url).ensure()
    job_id = adopt(storage, b"x")
    left = storage.inputs_dir / f"{job_id}.input.abc123.tmp"  # what input_file was writing when killed
    left.write_bytes(b"half")
    other = storage.inputs_dir / f"{new_job_id()}.input.def456.tmp"
    other.write_bytes(b"another job's")
    storage.discard_partial(job_id)
    assert not left.exists() and other.exists()
