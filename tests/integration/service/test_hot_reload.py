"""Redeploying while the service runs: real Redis, real worker processes, real ONNX files, the real `srgan` CLI.

Version 1 of model ``sr`` is the exact nearest-neighbour x4 model, version 2 a
small conv net, so a result shows which weights made it, not only what the
job record says.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import redis
from PIL import Image

from bench.tiny_models import make_conv_model, make_nearest_model, with_declared_scale
from core.catalog.registry import Registry, sha256_of
from core.keyspace import job_key
from tests.utils.models import publish_checked
from tests.utils.service import REPO, LiveApi, WorkerProc, image_bytes, service_env, wait_for, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]

SLOW_TILE_S = 0.25
"""Tile delay of these workers: the 128x128 job (16 tiles of 32) runs ~4 s, longer than a deploy takes."""


@pytest.fixture
def files(tmp_path):
    return {"v1": make_nearest_model(tmp_path / "in" / "v1.onnx"), "v2": make_conv_model(tmp_path / "in" / "v2.onnx")}


@pytest.fixture
def settings(redis_db, make_settings, tmp_path, files):
    registry = Registry(tmp_path / "models")
    publish_checked(registry, files["v1"], name="sr", version="v1")
    return make_settings(redis_db(), model="sr", models_dir=registry.root, debug_tile_delay_s=SLOW_TILE_S)


@contextlib.contextmanager
def stack(settings, tmp_path, workers=1):
    api = LiveApi(settings).start()
    procs: list[Any] = []
    try:
        procs.extend(WorkerProc(settings, tmp_path / f"worker{i}.log").start() for i in range(workers))
        with api.client() as client:
            yield client, procs
    finally:
        for proc in procs:
            proc.stop()
        api.stop()


def srgan(settings, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``srgan`` command in a subprocess, configured like the service."""
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=service_env(settings), cwd=REPO,  # noqa: S603
                          capture_output=True, text=True, timeout=60)


def submit(client, size=32, seed=0, **fields):
    response = client.post("/v1/jobs", files={"file": ("x.png", image_bytes(size, size, seed=seed), "image/png")},
                           data={k: str(v) for k, v in fields.items()})
    assert response.status_code == 202, response.text
    return response.headers["location"]


def ran_nearest(client, job, size, seed=0) -> bool:
    """True when the result is exactly the nearest-neighbour upscale (version 1's weights)."""
    out = np.asarray(Image.open(io.BytesIO(client.get(job["links"]["result"]).content)))
    lr = np.asarray(Image.open(io.BytesIO(image_bytes(size, size, seed=seed))))
    return out.shape == (size * 4, size * 4, 3) and np.array_equal(out, lr.repeat(4, 0).repeat(4, 1))


def active(client, name="sr"):
    return [m["version"] for m in client.get("/v1/models").json()["models"] if m["name"] == name and m["active"]]


def test_deploy_during_a_job_then_rollback(settings, files, tmp_path):
    with stack(settings, tmp_path) as (client, _):
        running = submit(client, size=128, seed=1)
        wait_until(lambda: client.get(running).json()["progress"] > 0, what="the v1 job to be under way")
        queued = submit(client, seed=2)  # waits behind it, asking for no version

        deployed = srgan(settings, "deploy", str(files["v2"]), "--name", "sr", "--version", "v2")
        assert deployed.returncode == 0, deployed.stderr
        assert "active version v1 -> v2" in deployed.stdout and "workers notified" in deployed.stdout
        assert client.get(running).json()["status"] == "running", "the deploy finished while the job ran"
        assert active(client) == ["v2"]
        after = submit(client, seed=3)
        pinned = submit(client, seed=4, model="sr:v1")

        job = wait_for(client, running, timeout_s=60)
        assert job["status"] == "succeeded", job
        assert job["model"]["version"] == "v1" and ran_nearest(client, job, 128, seed=1), "finished on v1"
        for location, seed in ((queued, 2), (after, 3)):
            job = wait_for(client, location, timeout_s=30)
            assert job["status"] == "succeeded", job
            assert job["params"]["model"] == "sr", "a job naming no version is not pinned at upload"
            assert job["model"] == {**job["model"], "name": "sr", "version": "v2"}
            assert not ran_nearest(client, job, 32, seed), "v2's weights made it"
        job = wait_for(client, pinned, timeout_s=30)
        assert job["model"]["version"] == "v1" and ran_nearest(client, job, 32, seed=4), "sr:v1 stays pinned"

        rolled = srgan(settings, "rollback", "sr")
        assert rolled.returncode == 0, rolled.stderr
        assert "active version v2 -> v1" in rolled.stdout
        job = wait_for(client, submit(client, seed=5), timeout_s=30)
        assert job["model"]["version"] == "v1" and ran_nearest(client, job, 32, seed=5)

        listed = srgan(settings, "models", "--json")
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout) == client.get("/v1/models").json()


def test_bad_files_are_refused_and_the_service_keeps_its_version(settings, files, tmp_path):
    liar = with_declared_scale(make_nearest_model(tmp_path / "x2.onnx", scale=2), tmp_path / "liar.onnx", 4)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(files["v2"].read_bytes()[:200])
    mismatched = tmp_path / "card" / "v2.onnx"
    mismatched.parent.mkdir()
    mismatched.write_bytes(files["v2"].read_bytes())
    (tmp_path / "card" / "v2.card.json").write_text(json.dumps({"scale": 4, "sha256": sha256_of(files["v1"])}))
    cases = [(corrupt, "is not a valid ONNX model"), (liar, "declares x4, but a 28x20 image came out 56x40"),
             (mismatched, "differs from the card's")]
    with stack(settings, tmp_path) as (client, _):
        for path, message in cases:
            refused = srgan(settings, "deploy", str(path), "--name", "sr")
            assert refused.returncode == 1, refused.stdout
            assert message in refused.stderr and "the active version of sr is still v1" in refused.stderr
            assert active(client) == ["v1"]
            listed = client.get("/v1/models").json()["models"]
            assert [m["version"] for m in listed if m["name"] == "sr"] == ["v1"], "nothing was added"
        job = wait_for(client, submit(client), timeout_s=30)
        assert job["status"] == "succeeded" and job["model"]["version"] == "v1"


def test_two_workers_both_switch_without_failing_a_job(settings, files, tmp_path):
    settings = settings.model_copy(update={"debug_tile_delay_s": 0.05})
    with stack(settings, tmp_path, workers=2) as (client, workers):
        before = [submit(client, size=64, seed=i) for i in range(6)]  # 4 tiles each, ~0.3 s
        wait_until(lambda: sum(client.get(loc).json()["status"] == "succeeded" for loc in before) >= 2,
                   what="jobs on v1")
        assert srgan(settings, "deploy", str(files["v2"]), "--name", "sr", "--version", "v2").returncode == 0
        after = [submit(client, size=64, seed=i) for i in range(10)]
        jobs = [wait_for(client, loc, timeout_s=60) for loc in before + after]
        assert [j["status"] for j in jobs] == ["succeeded"] * len(jobs), [j.get("error") for j in jobs]
        assert {j["model"]["version"] for j in jobs[:2]} == {"v1"}
        late = jobs[len(before):]
        assert {j["model"]["version"] for j in late} == {"v2"}, "every job started after the deploy ran v2"
        with contextlib.closing(redis.Redis.from_url(settings.redis_url, decode_responses=True)) as r:
            ran_on = {j["id"]: str(r.hget(job_key(j["id"]), "worker")) for j in late}
        by_worker = {w.name: {j["model"]["version"] for j in late if ran_on[j["id"]].startswith(w.name)}
                     for w in workers}
        assert by_worker == {w.name: {"v2"} for w in workers}, f"both workers switched: {by_worker}"

        assert srgan(settings, "rollback", "sr").returncode == 0
        again = [wait_for(client, submit(client, size=64, seed=i), timeout_s=60) for i in range(4)]
        assert all(j["status"] == "succeeded" and j["model"]["version"] == "v1" for j in again), again
