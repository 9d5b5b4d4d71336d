"""Jobs that cannot finish inside the time limit are refused up front (422 too_expensive), from the
throughput a real worker measured and published."""

from __future__ import annotations

import json

import pytest

from bench.tiny_models import make_srresnet_model
from core.keyspace import THROUGHPUT
from tests.utils.service import LiveApi, api_and_worker, image_bytes, wait_for, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def module_db(redis_db) -> str:
    """One database for the module (the session's Redis has 15); each test flushes it first."""
    return redis_db()


def fresh(url: str) -> str:
    import redis

    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url


def measurements(service_redis, model: str) -> dict[str, float]:
    raw = service_redis.hgetall(THROUGHPUT)
    return {k: json.loads(v)["px_s"] for k, v in raw.items() if k.startswith(model + "|")}


def test_a_job_over_the_time_limit_is_refused_with_the_estimate(module_db, make_settings, tmp_path):
    import redis

    model = make_srresnet_model(tmp_path / "slow.onnx", blocks=8, filters=32)  # ~10-20k px/s here, one thread
    settings = make_settings(fresh(module_db), model=str(model), debug_tile_delay_s=0, soft_time_limit_s=5.0,
                             time_limit_s=20.0, visibility_timeout_s=25.0, max_input_pixels=4_000_000,
                             max_output_pixels=64_000_000)
    client_redis = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    with api_and_worker(settings, tmp_path / "worker.log") as client:
        # the worker measures its model when it loads it
        measured = wait_until(lambda: measurements(client_redis, "srresnet-random"), timeout_s=60,
                              what="a throughput figure")
        (px_s,) = measured.values()
        assert px_s > 0

        side = int((px_s * 5.0 * 4) ** 0.5)  # about 4x what fits in the 5 s limit
        big = client.post("/v1/jobs", files={"file": ("big.png", image_bytes(side, side), "image/png")})
        assert big.status_code == 422, big.text
        error = big.json()["error"]
        assert error["code"] == "too_expensive"
        assert "time limit of 5 s" in error["message"] and f"{side}x{side}" in error["message"]
        assert "SRGAN_SOFT_TIME_LIMIT_S" in error["message"]
        assert client_redis.scard("srgan:jobs:queued") == 0

        small = client.post("/v1/jobs", files={"file": ("small.png", image_bytes(130, 130), "image/png")})
        assert small.status_code == 202, small.text
        done = wait_for(client, small.headers["location"], timeout_s=60)
        assert done["status"] == "succeeded", done
        assert len(measurements(client_redis, "srresnet-random")) == 1  # the job refined the same process's figure
    client_redis.close()


def test_no_refusal_without_a_measurement(module_db, make_settings, tmp_path):
    # no worker has measured anything: the estimate is unknown, so nothing is refused
    settings = make_settings(fresh(module_db), soft_time_limit_s=0.5, time_limit_s=5.0, visibility_timeout_s=6.0)
    api = LiveApi(settings).start()
    try:
        with api.client() as client:
            response = client.post("/v1/jobs", files={"file": ("a.png", image_bytes(300, 300), "image/png")})
            assert response.status_code == 202, response.text
    finally:
        api.stop()
