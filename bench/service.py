"""Service benchmark: what the queue costs on top of the engine.

Run from the repository root: ``srgan bench service [--model FILE.onnx] [--json OUT]``.

It first times the worker's own work alone in this process
(``core.render.render``: decode, engine, encode, on the same model, settings
and PNG files), then starts the service as ``srgan serve`` does with nothing
configured (an embedded redis-server, one worker process, the API) and
measures, in the same run on the same machine:

- latency from POST to a downloaded result for a 64x64 image, sequentially,
  p50 and p95, minus the render's own time for that image: the service's
  overhead (goal: p50 <= 50 ms). Shown twice: minus the render-alone median
  ("engine alone" in the report), and minus the engine time the worker
  recorded on each job (which leaves decode and encode in the overhead);
- throughput with 8 clients uploading 256x256 images at once, as a ratio to
  the render alone on the same images one after another (goal >= 0.9).

Images are crops of the benchmark photos in ``../shared/data/bench`` when
present (smooth noise otherwise). The model is ``SRGAN_MODEL`` when it
resolves, else a random-weight SRResNet x4 (the same compute as the real one).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.tiny_models import make_srresnet_model
from core.catalog.catalog import ModelCatalog
from core.catalog.load import open_engine
from core.redis_server import free_port
from core.render import PixelLimits, RenderOptions, render
from core.settings import Settings, get_settings
from model.errors import ModelError

REPO = Path(__file__).resolve().parents[1]
BENCH_IMAGES = REPO.parent / "shared" / "data" / "bench"


def photo_crops(size: int, count: int, seed: int) -> list[np.ndarray]:
    """``count`` RGB crops of ``size`` x ``size`` from the benchmark photos (or smooth noise)."""
    rng = np.random.default_rng(seed)
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(BENCH_IMAGES.glob("*/*.png"))]
    photos = [p for p in photos if p.shape[0] >= size and p.shape[1] >= size]
    crops = []
    for i in range(count):
        if photos:
            photo = photos[i % len(photos)]
            y = int(rng.integers(0, photo.shape[0] - size + 1))
            x = int(rng.integers(0, photo.shape[1] - size + 1))
            crops.append(np.ascontiguousarray(photo[y:y + size, x:x + size]))
        else:
            small = rng.integers(0, 256, (size // 8 + 1, size // 8 + 1, 3), dtype=np.uint8)
            crops.append(np.ascontiguousarray(small.repeat(8, 0).repeat(8, 1)[:size, :size]))
    return crops


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def pick_model(spec: str | None, tmp: Path) -> tuple[Path, str]:
    try:
        path = ModelCatalog(get_settings()).resolve(spec).path
        return path, str(path)
    except ModelError:
        path = make_srresnet_model(tmp / "srresnet_x4.onnx", scale=4)
        return path, "random-weight SRResNet x4 (the default model is not shipped in this build)"


def engine_alone(model: Path, settings: Settings, small: list[bytes], large: list[bytes]) -> dict:
    """The worker's own work on these PNG files, in this process: ``core.render.render`` (decode, engine,
    encode) with the engine built from the settings as a worker builds it."""
    up = open_engine(settings, model)
    limits, options = PixelLimits.from_settings(settings), RenderOptions()
    render(up, small[0], options, limits)
    render(up, large[0], options, limits)  # warm-up for both shapes
    small_s = []
    for data in small:
        t = time.perf_counter()
        render(up, data, options, limits)
        small_s.append(time.perf_counter() - t)
    t = time.perf_counter()
    for data in large:
        render(up, data, options, limits)
    large_total = time.perf_counter() - t
    return {"backend": up.backend_name, "small_median_s": statistics.median(small_s),
            "large_total_s": large_total, "large_per_image_s": large_total / len(large)}


class Service:
    """``srgan serve`` with nothing configured, as a subprocess."""

    def __init__(self, model: Path, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in ("SRGAN_REDIS_URL",)}
        env.update(SRGAN_MODEL=str(model), SRGAN_DATA_DIR=str(data_dir))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.log = open(data_dir / "serve.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "cli.main", "serve", "--port", str(self.port), "--log-level", "warning"],
            cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait_ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"srgan serve exited with {self.process.returncode}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("srgan serve was not ready in time")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()


def run_job(client: httpx.Client, data: bytes) -> tuple[float, dict]:
    """POST, wait for the end, download; returns (seconds, the finished job)."""
    t = time.perf_counter()
    response = client.post("/v1/jobs", files={"file": ("bench.png", data, "image/png")})
    response.raise_for_status()
    location = response.headers["location"]
    while True:
        job = client.get(location, params={"wait": 60}).json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            break
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job['id']} {job['status']}: {job.get('error')}")
    result = client.get(job["links"]["result"])
    result.raise_for_status()
    return time.perf_counter() - t, job


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def run(args: argparse.Namespace) -> int:
    """``srgan bench service`` (arguments: ``cli/bench.py``)."""

    settings = get_settings()
    small = photo_crops(64, args.latency_jobs, seed=1)
    large = photo_crops(256, args.throughput_jobs, seed=2)
    with tempfile.TemporaryDirectory(prefix="srgan-bench-") as tmp_name:
        tmp = Path(tmp_name)
        model, model_desc = pick_model(args.model, tmp)
        print(f"model: {model_desc}", flush=True)
        small_png = [png(a) for a in small]
        large_png = [png(a) for a in large]
        print("engine alone (the worker's render: decode, engine, encode)...", flush=True)
        engine = engine_alone(model, settings, small_png, large_png)
        print(f"  {engine['backend']}: 64x64 {engine['small_median_s'] * 1e3:.1f} ms, "
              f"256x256 {engine['large_per_image_s']:.2f} s per image", flush=True)

        print("starting the service (embedded Redis, one worker, the API)...", flush=True)
        service = Service(model, tmp / "data")
        try:
            service.wait_ready()
            with httpx.Client(base_url=service.url, timeout=300) as client:
                for data in small_png[:3]:
                    run_job(client, data)  # warm-up: first jobs load the model in the worker
                latencies, worker_engine = [], []
                for data in small_png:
                    seconds, job = run_job(client, data)
                    latencies.append(seconds)
                    worker_engine.append(job["timings"]["engine_s"])

            print(f"throughput: {args.clients} clients, {len(large_png)} images of 256x256...", flush=True)
            local = threading.local()

            def one(data: bytes) -> float:
                if not hasattr(local, "client"):
                    local.client = httpx.Client(base_url=service.url, timeout=600)
                return run_job(local.client, data)[0]

            t = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                list(pool.map(one, large_png))
            service_total = time.perf_counter() - t
        finally:
            service.stop()

    overhead = [lat - engine["small_median_s"] for lat in latencies]
    overhead_own = [lat - e for lat, e in zip(latencies, worker_engine)]
    results = {
        "model": model_desc,
        "backend": engine["backend"],
        "cpus": os.cpu_count(),
        "latency_64": {
            "jobs": len(latencies),
            "engine_alone_median_ms": round(engine["small_median_s"] * 1e3, 1),
            "worker_engine_median_ms": round(statistics.median(worker_engine) * 1e3, 1),
            "latency_p50_ms": round(percentile(latencies, 50) * 1e3, 1),
            "latency_p95_ms": round(percentile(latencies, 95) * 1e3, 1),
            "overhead_p50_ms": round(percentile(overhead, 50) * 1e3, 1),
            "overhead_p95_ms": round(percentile(overhead, 95) * 1e3, 1),
            "overhead_vs_worker_engine_p50_ms": round(percentile(overhead_own, 50) * 1e3, 1),
            "overhead_vs_worker_engine_p95_ms": round(percentile(overhead_own, 95) * 1e3, 1),
        },
        "throughput_256": {
            "clients": args.clients,
            "jobs": len(large),
            "engine_alone_images_per_s": round(len(large) / engine["large_total_s"], 3),
            "service_images_per_s": round(len(large) / service_total, 3),
            "ratio": round(engine["large_total_s"] / service_total, 3),
        },
        "goals": {"overhead_p50_ms <= 50": None, "throughput ratio >= 0.9": None},
    }
    results["goals"] = {
        "overhead_p50_ms <= 50": results["latency_64"]["overhead_p50_ms"] <= 50,
        "throughput ratio >= 0.9": results["throughput_256"]["ratio"] >= 0.9,
    }
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0

