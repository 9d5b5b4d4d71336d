"""`srgan serve` with its job files on an object store (a real SeaweedFS): the embedded Redis, the worker and
the API find each other's files only through the store."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from tests.e2e.conftest import start_served
from tests.utils.service import image_bytes, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def test_serve_on_s3_runs_jobs_and_keeps_no_job_files_locally(object_store, tiny_model, tmp_path):
    bucket = object_store.new_bucket()
    env = {"SRGAN_STORAGE_URL": f"s3://{bucket}/served", "SRGAN_S3_ENDPOINT_URL": object_store.endpoint_url}
    with start_served(tmp_path, tiny_model, env) as served, httpx.Client(base_url=served.url, timeout=30) as client:
        ready = client.get("/readyz").json()
        assert ready["checks"]["storage"]["ok"] is True, ready
        response = client.post("/v1/jobs", files={"file": ("photo.jpg", image_bytes(33, 21, fmt="JPEG"), "image/jpeg")})
        assert response.status_code == 202, response.text
        job = wait_for(client, response.headers["location"])
        assert job["status"] == "succeeded", job
        result = client.get(job["links"]["result"])
        assert result.headers["content-type"] == "image/jpeg"
        assert result.headers["content-disposition"] == 'attachment; filename="photo_x4.jpg"'
        assert Image.open(io.BytesIO(result.content)).size == (132, 84)
        assert object_store.keys(bucket, f"served/{job['id']}/") == [
            f"served/{job['id']}/input", f"served/{job['id']}/result.jpg"]
        assert not (tmp_path / "jobs" / job["id"]).exists(), "nothing of the job is kept on the host"
