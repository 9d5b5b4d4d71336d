"""Cancel and time limits with a real worker: a requested cancel ends ``canceled`` unless the result was
already committed (and the answer says which); a soft time limit is ``timeout`` wherever it strikes."""

from __future__ import annotations

import pytest

from bench.tiny_models import make_srresnet_model
from core.storage import open_storage
from tests.utils.service import api_and_worker, image_bytes, wait_for, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def module_redis(redis_db):
    return redis_db()  # one database; each stack below has its own queue


def submit(client, data):
    response = client.post("/v1/jobs", files={"file": ("a.png", data, "image/png")})
    assert response.status_code == 202, response.text
    return response.headers["location"]


def test_cancel_of_a_running_one_tile_job_ends_canceled_and_leaves_no_result(module_redis, make_settings,
                                                                            storage_settings, backend, tmp_path):
    # one tile (16x16 < tile 32), then a long pause after it: the cancel lands after the engine's last check
    settings = make_settings(module_redis, queue="cancel", debug_tile_delay_s=2.0, **storage_settings(backend))
    with api_and_worker(settings, tmp_path / "worker.log") as client:
        location = submit(client, image_bytes(16, 16))
        wait_until(lambda: client.get(location).json()["progress"] == 1, what="the only tile to be done")
        answer = client.delete(location)
        assert answer.status_code == 202, answer.text
        assert answer.json()["cancel_requested"] is True
        job = wait_for(client, location)
        assert job["status"] == "canceled", job
        assert job["output"] is None and job["error"] is None
        result = client.get(f"{location}/result")
        assert result.status_code == 409 and result.json()["error"]["code"] == "job_canceled"
        assert open_storage(settings).files(job["id"]) == ["input"], "the result written before the cancel is not kept"

        # a cancel after the result was committed is refused, and says so
        done = wait_for(client, submit(client, image_bytes(8, 8)), timeout_s=30)
        assert done["status"] == "succeeded"
        late = client.delete(done["links"]["self"])
        assert late.status_code == 409 and late.json()["error"]["code"] == "job_finished"
        assert "committed" in late.json()["error"]["message"]
        assert client.get(done["links"]["result"]).status_code == 200


def test_a_soft_time_limit_inside_the_model_run_is_timeout(module_redis, make_settings, tmp_path):
    # one model call of several seconds on the whole image (float32: bfloat16 on an AMX CPU ran a 128x128 image in
    # 0.2 s, inside the limit): the limit's signal arrives while ONNX Runtime runs
    model = make_srresnet_model(tmp_path / "srresnet.onnx", blocks=16, filters=64)
    settings = make_settings(module_redis, queue="timeout", model=str(model), tile=0, overlap=0,
                             debug_tile_delay_s=0, soft_time_limit_s=1.0, time_limit_s=20.0, precision="f32",
                             visibility_timeout_s=25.0, cost_limit_factor=0)  # no up-front refusal
    with api_and_worker(settings, tmp_path / "worker.log") as client:
        job = wait_for(client, submit(client, image_bytes(320, 320)), timeout_s=60)
        assert job["status"] == "failed", job
        assert job["error"]["code"] == "timeout", job["error"]
        assert "1 s" in job["error"]["message"]
