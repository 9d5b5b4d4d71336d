"""Many hosts: an API and workers that share nothing but Redis and the object store (SeaweedFS).

Each "host" has its own data folder: its own upload spool and its own registry folder (its model
cache). The model reaches them through the store's registry (``srgan deploy`` from yet another host),
jobs spread over the workers, a killed worker's job finishes on another one, a worker that joins later
syncs the models by itself, a deploy reaches every host like it reaches one, and every result comes
back through the API.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import redis
from PIL import Image

from bench.tiny_models import make_conv_model, make_nearest_model
from core.catalog.registry import Registry
from core.keyspace import job_key
from core.settings import Settings
from tests.utils.service import REPO, LiveApi, WorkerProc, image_bytes, service_env, wait_for, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

# A dead worker's message comes back after the visibility timeout, which must exceed the hard limit.
LIMITS = {"soft_time_limit_s": 5.0, "time_limit_s": 6.0, "visibility_timeout_s": 7.0}


def host(base: Settings, root: Path, name: str) -> Settings:
    """The settings of one host: the shared Redis and store, its own data folder (spool and models)."""
    return base.model_copy(update={"data_dir": root / name, "models_dir": None})


def srgan(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=service_env(settings), cwd=REPO,  # noqa: S603
                          capture_output=True, text=True, timeout=90, check=False)


def submit(client, size: int, seed: int) -> str:
    response = client.post("/v1/jobs", files={"file": ("x.png", image_bytes(size, size, seed=seed), "image/png")})
    assert response.status_code == 202, response.text
    return response.headers["location"]


def ran_nearest(client, job, size, seed) -> bool:
    """True when the result downloaded through the API is exactly version 1's (nearest-neighbour) output."""
    answer = client.get(job["links"]["result"])
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    out = np.asarray(Image.open(io.BytesIO(answer.content)))
    lr = np.asarray(Image.open(io.BytesIO(image_bytes(size, size, seed=seed))))
    return out.shape == (size * 4, size * 4, 3) and np.array_equal(out, lr.repeat(4, 0).repeat(4, 1))


def active(client) -> list[str]:
    return [m["version"] for m in client.get("/v1/models").json()["models"] if m["name"] == "sr" and m["active"]]


def test_api_and_workers_sharing_only_redis_and_the_store(redis_db, make_settings, storage_settings, tmp_path):
    files = {"v1": make_nearest_model(tmp_path / "in" / "v1.onnx"), "v2": make_conv_model(tmp_path / "in" / "v2.onnx")}
    base = make_settings(redis_db(), model="sr", debug_tile_delay_s=0.1, **LIMITS, **storage_settings("s3"))
    deployer = host(base, tmp_path, "deployer")
    deployed = srgan(deployer, "deploy", str(files["v1"]), "--name", "sr", "--version", "v1")
    assert deployed.returncode == 0, deployed.stderr

    api = LiveApi(host(base, tmp_path, "api")).start()
    workers: dict[str, WorkerProc] = {}
    r = redis.Redis.from_url(base.redis_url, decode_responses=True)
    try:
        for name in ("a", "b"):
            workers[name] = WorkerProc(host(base, tmp_path, f"worker-{name}"), tmp_path / f"{name}.log").start()
        with api.client() as client, contextlib.closing(r):
            wait_until(lambda: active(client) == ["v1"], what="the API to find v1 in the store's registry")

            def worker_of(job) -> str:
                record = str(r.hget(job_key(job["id"]), "worker") or "")
                return next(n for n, w in workers.items() if record.startswith(w.name + "@"))

            # jobs spread over both hosts, results come back through the API
            locations = [submit(client, 64, seed) for seed in range(8)]
            jobs = [wait_for(client, loc, timeout_s=60) for loc in locations]
            assert [j["status"] for j in jobs] == ["succeeded"] * 8, [j.get("error") for j in jobs]
            assert {j["model"]["version"] for j in jobs} == {"v1"}
            assert all(ran_nearest(client, j, 64, seed) for seed, j in enumerate(jobs))
            assert {worker_of(j) for j in jobs} == {"a", "b"}, "jobs ran on both hosts"
            for name in ("a", "b"):
                folder = tmp_path / f"worker-{name}"
                assert Registry(folder / "models").active_version("sr") == "v1", "each host synced its own cache"
                assert list((folder / "jobs" / ".inputs").iterdir()) == [], "no input left on the worker"

            # a worker dies mid-job: the job finishes on the other host
            slow = submit(client, 160, 7)  # 25 tiles of 0.1 s
            wait_until(lambda: client.get(slow).json()["progress"] > 0.1, what="the slow job to be under way")
            victim = worker_of(client.get(slow).json())
            workers[victim].kill_all()
            survivor = "b" if victim == "a" else "a"
            job = wait_for(client, slow, timeout_s=60)
            assert job["status"] == "succeeded" and job["attempts"] == 2, job
            assert worker_of(job) == survivor
            assert ran_nearest(client, job, 160, 7)

            # a new host joins, then a deploy from elsewhere reaches both running workers
            workers["c"] = WorkerProc(host(base, tmp_path, "worker-c"), tmp_path / "c.log").start()
            deployed = srgan(deployer, "deploy", str(files["v2"]), "--name", "sr", "--version", "v2")
            assert deployed.returncode == 0, deployed.stderr
            wait_until(lambda: active(client) == ["v2"], what="the API to see v2")
            locations = [submit(client, 64, seed) for seed in range(8)]
            late = [wait_for(client, loc, timeout_s=60) for loc in locations]
            assert [j["status"] for j in late] == ["succeeded"] * 8, [j.get("error") for j in late]
            assert {j["model"]["version"] for j in late} == {"v2"}, "every job after the deploy ran v2"
            assert not any(ran_nearest(client, j, 64, seed) for seed, j in enumerate(late)), "v2's weights ran"
            assert {worker_of(j) for j in late} == {survivor, "c"}, "both live hosts switched"
    finally:
        for proc in workers.values():
            proc.stop()
        api.stop()
