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
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from bench.engine import cpu_report

HUGE_PAGES = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
"""The THP variant's environment: glibc's malloc asks for transparent huge pages (madvise) on its large blocks,
which the engine's activations are. Where the kernel's THP mode is ``madvise`` (Debian's default), the first
inference of a new image size otherwise takes a 4 KiB page fault per page of activations it touches (240,000
for a 512x384 image at x4, measured with getrusage), the part of the first tile that later ones do not pay."""


@dataclass(frozen=True)
class Variant:
    precision: str
    cache: str
    """off (no compile cache), cold (emptied first) or warm (the cache the previous process left)."""
    env: tuple[tuple[str, str], ...] = ()
    tile: int | None = None
    """``--tile`` (None: the settings' auto plan)."""


VARIANTS = {
    "f32, no cache": Variant("f32", "off"),
    "f32, cold cache": Variant("f32", "cold"),
    "f32, warm cache": Variant("f32", "warm"),
    "auto, no cache": Variant("auto", "off"),
    "auto, cold cache": Variant("auto", "cold"),
    "auto, warm cache": Variant("auto", "warm"),
    "auto, warm, THP": Variant("auto", "warm", tuple(HUGE_PAGES.items())),
}


def _image(path: Path, width: int, height: int) -> None:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC).save(path)


def _once(work: Path, image: Path, v: Variant, model: str) -> tuple[float, float, float]:
    """The process's wall seconds, and the moments its engine was ready and its first tile done, from the process
    start (``--timings``)."""
    cache_dir = work / f"cache-{v.precision}"
    if v.cache == "cold":
        shutil.rmtree(cache_dir, ignore_errors=True)
    env = {**os.environ, "SRGAN_PRECISION": v.precision, "SRGAN_DATA_DIR": str(work / "data"),
           "SRGAN_CACHE_DIR": str(cache_dir), "SRGAN_COMPILE_CACHE": "false" if v.cache == "off" else "true",
           **dict(v.env)}
    out = work / "out.png"
    tile = [] if v.tile is None else ["--tile", str(v.tile)]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cli.main", "upscale", str(image), "-o", str(out), "--overwrite",
                           "--no-progress", "--timings", "--model", model, *tile], env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise RuntimeError(f"srgan upscale ({v}) exited {done.returncode}: {done.stderr[-800:]}")
    wall = time.perf_counter() - started
    return wall, moment(done.stderr, "engine ready"), moment(done.stderr, "first tile")


def _thp_mode() -> str:
    """The kernel's THP mode (the bracketed word of /sys/kernel/mm/transparent_hugepage/enabled)."""
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "unknown"
    found = re.search(r"\[(\w+)\]", text)
    return found.group(1) if found else text.strip()


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
    print(f"transparent huge pages: {_thp_mode()}")
    with tempfile.TemporaryDirectory(prefix="srgan-startup-") as tmp:
        work = Path(tmp)
        image = work / "in.png"
        _image(image, args.width, args.height)
        variants = {**VARIANTS, **{f"auto, warm, tile {t}": Variant("auto", "warm", tile=t) for t in args.tiles}}
        times: dict[str, list[float]] = {name: [] for name in variants}
        readies: dict[str, list[float]] = {name: [] for name in variants}
        firsts: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeat):
            for name, v in variants.items():
                if v.cache == "warm":  # the cache a previous process left
                    _once(work, image, replace(v, cache="cold"), args.model)
                wall, ready, first = _once(work, image, v, args.model)
                times[name].append(wall)
                readies[name].append(ready)
                firsts[name].append(first)
    base = statistics.median(times["f32, cold cache"])
    print(f"\nsrgan upscale {args.width}x{args.height} -> x4, whole process, median of {args.repeat}; seconds from "
          "the process start to the engine ready (imports, model load, compile, precision) and to the first tile "
          "done (--timings)")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<22} {median:6.2f} s   {base / median:5.2f}x f32 cold   engine ready "
              f"{statistics.median(readies[name]):5.2f} s   first tile {statistics.median(firsts[name]):5.2f} s")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    return 0
