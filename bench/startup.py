"""``srgan bench startup``: a whole ``srgan upscale`` process on a small image, the start-up included.

A 512x384 image is mostly start-up: imports, model load, ``precision auto``'s
second compile and float32 check. Each variant runs as a fresh process
(``--repeat`` times, alternating): ``f32`` and ``auto`` with an empty compile
cache (cold) and with the cache the previous run left (warm), and ``auto``
without the cache. Printed: median wall seconds, each against ``f32`` cold,
the CPU and the load average.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.engine import cpu_report

VARIANTS = {
    "f32, no cache": ("f32", "off"),
    "f32, cold cache": ("f32", "cold"),
    "f32, warm cache": ("f32", "warm"),
    "auto, no cache": ("auto", "off"),
    "auto, cold cache": ("auto", "cold"),
    "auto, warm cache": ("auto", "warm"),
}


def _image(path: Path, width: int, height: int) -> None:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC).save(path)


def _once(work: Path, image: Path, precision: str, cache: str, model: str) -> tuple[float, float, float]:
    """The process's wall seconds, and the moments its engine was ready and its first tile done, from the process
    start (``--timings``)."""
    cache_dir = work / f"cache-{precision}"
    if cache == "cold":
        shutil.rmtree(cache_dir, ignore_errors=True)
    env = {**os.environ, "SRGAN_PRECISION": precision, "SRGAN_DATA_DIR": str(work / "data"),
           "SRGAN_CACHE_DIR": str(cache_dir), "SRGAN_COMPILE_CACHE": "false" if cache == "off" else "true"}
    out = work / "out.png"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cli.main", "upscale", str(image), "-o", str(out), "--overwrite",
                           "--no-progress", "--timings", "--model", model], env=env, check=True, capture_output=True,
                          text=True)
    wall = time.perf_counter() - started
    return wall, moment(done.stderr, "engine ready"), moment(done.stderr, "first tile")


def moment(stderr: str, what: str) -> float:
    """The moment ``what`` (``engine ready``, ``first tile``...) of ``srgan upscale --timings``'s line."""
    found = re.search(rf"srgan: timings: .*{what} ([0-9.]+) s", stderr)
    if found is None:
        raise RuntimeError(f"no {what!r} in srgan upscale's timings: {stderr[-500:]}")
    return float(found.group(1))


def run(args: argparse.Namespace) -> int:
    info = cpu_report()
    load = os.getloadavg()
    print(f"CPU: {info['cpu']}; " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in info["flags"].items()))
    print(f"load average (1 min) at start: {load[0]:.2f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="srgan-startup-") as tmp:
        work = Path(tmp)
        image = work / "in.png"
        _image(image, args.width, args.height)
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        readies: dict[str, list[float]] = {name: [] for name in VARIANTS}
        firsts: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for _ in range(args.repeat):
            for name, (precision, cache) in VARIANTS.items():
                if cache == "warm":  # the cache a previous process left
                    _once(work, image, precision, "cold", args.model)
                wall, ready, first = _once(work, image, precision, cache, args.model)
                times[name].append(wall)
                readies[name].append(ready)
                firsts[name].append(first)
    base = statistics.median(times["f32, cold cache"])
    print(f"\nsrgan upscale {args.width}x{args.height} -> x4, whole process, median of {args.repeat}; seconds from "
          "the process start to the engine ready (imports, model load, compile, precision) and to the first tile "
          "done (--timings)")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<18} {median:6.2f} s   {base / median:5.2f}x f32 cold   engine ready "
              f"{statistics.median(readies[name]):5.2f} s   first tile {statistics.median(firsts[name]):5.2f} s")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    return 0
