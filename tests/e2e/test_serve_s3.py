"""`srgan serve` with its job files on an object store (a real SeaweedFS): the embedded Redis, the worker and
the API find each other's files only through the store."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.conftest import start_served, upscale_a_jpeg

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def test_serve_on_s3_runs_jobs_and_keeps_no_job_files_locally(object_store, tiny_model, tmp_path):
    bucket = object_store.new_bucket()
    env = {"SRGAN_STORAGE_URL": f"s3://{bucket}/served", "SRGAN_S3_ENDPOINT_URL": object_store.endpoint_url}
    with start_served(tmp_path, tiny_model, env) as served, httpx.Client(base_url=served.url, timeout=30) as client:
        ready = client.get("/readyz").json()
        assert ready["checks"]["storage"]["ok"] is True, ready
        job, result = upscale_a_jpeg(client)
        assert result.headers["content-disposition"] == 'attachment; filename="photo_x4.jpg"'
        assert object_store.keys(bucket, f"served/{job['id']}/") == [
            f"served/{job['id']}/input", f"served/{job['id']}/result.jpg"]
        assert not (tmp_path / "jobs" / job["id"]).exists(), "nothing of the job is kept on the host"
