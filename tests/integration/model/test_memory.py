"""Tile memory: ``tile="auto"`` sizes tiles by a budget, and a tile that runs out of memory is split, not fatal.

The out-of-memory runs are real: a child process caps its own address space
(RLIMIT_AS) just above what the loaded model needs, so the runtime's own
allocation fails inside the inference of a whole 256x256 image (192x192 fitted once the graph
rewrite of ``model.graph`` cut the working memory per pixel). RLIMIT_AS counts
address space, not memory, so the child fixes glibc's malloc: one arena (each
new thread's arena reserves 64 MB of address space) and a fixed mmap threshold
(freed big blocks go back to the system instead of staying in the heap). Without
that, how much of the cap is left for the retries depended on thread timing, and
on a loaded 2-core AMD EPYC even a 60x60 sub-tile failed now and then.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.catalog.shipped import WEIGHTS_DIR
from model.tiling import MIN_AUTO_TILE, TilePlan, axis_windows, choose_tiles, tile_memory

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]
SHIPPED = WEIGHTS_DIR / "srresnet_x4.onnx"

CHILD = """
import json, resource, sys
import numpy as np
from bench.engine import psnr, test_image
from model.engine import Upscaler
up = Upscaler.from_file(sys.argv[1], backend=sys.argv[2], precision="f32", tile=0, overlap=8)
img = test_image(256)
up.upscale(img[:40, :40])  # warm-up: kernels and threads exist
vm = int([l for l in open("/proc/self/status") if l.startswith("VmSize")][0].split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + 350 * 2**20, resource.RLIM_INFINITY))
out = up.upscale(img)  # the whole image at once does not fit
reference = up.upscale(img, tile=128)  # what one split of the whole image runs
print(json.dumps({"splits": up.oom_splits, "shape": list(out.shape), "psnr": psnr(out, reference),
                  "equal": bool(np.array_equal(out, reference))}))
"""


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_a_tile_that_runs_out_of_memory_is_split_and_retried(backend):
    env = {**os.environ, "MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": str(2**20)}
    res = subprocess.run([sys.executable, "-c", CHILD, str(SHIPPED), backend], capture_output=True, text=True,
                         timeout=300, cwd=REPO, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["shape"] == [1024, 1024, 3]
    assert report["splits"] >= 1, "the whole image was expected not to fit under the cap"
    assert "re-splitting the 256x256 tile" in res.stderr
    if report["splits"] == 1:  # split once: exactly the 128-pixel plan
        assert report["equal"]
    else:  # split again further down: other seams, same picture
        assert report["psnr"] >= 50


def _plan_memory(h: int, w: int, tiles: tuple[int, int], scale: int, overlap: int, per_px: int, batch: int = 1) -> int:
    (_, wh), (_, ww) = axis_windows(h, tiles[0], overlap), axis_windows(w, tiles[1], overlap)
    return tile_memory(wh, ww, w, scale, per_px, batch)


def _plan_pixels(h: int, w: int, tiles: tuple[int, int], overlap: int) -> int:
    (nh, wh), (nw, ww) = axis_windows(h, tiles[0], overlap), axis_windows(w, tiles[1], overlap)
    return nh * wh * nw * ww


def test_choose_tiles_runs_the_fewest_pixels_that_fit():
    per_px, scale, overlap = 640, 4, 8
    budget = 2**30
    assert choose_tiles(200, 300, scale, overlap, budget, per_px) == (0, 0), "a small image runs whole"
    tiles = choose_tiles(2048, 2048, scale, overlap, budget, per_px)
    assert _plan_memory(2048, 2048, tiles, scale, overlap, per_px) <= budget
    assert all(MIN_AUTO_TILE <= t < 2048 for t in tiles)
    # no plan with as few or fewer windows along either axis fits with fewer pixels: exhaustive over squares
    # and strips
    best = _plan_pixels(2048, 2048, tiles, overlap)
    for th in range(MIN_AUTO_TILE, 2049, 7):
        for tw in range(MIN_AUTO_TILE, 2049, 7):
            if _plan_memory(2048, 2048, (th, tw), scale, overlap, per_px) <= budget:
                assert _plan_pixels(2048, 2048, (th, tw), overlap) >= best
    # a 512x512 image that does not fit whole runs as two strips (3% recomputed), not 2x2 tiles (6%)
    strips = choose_tiles(512, 512, scale, overlap, 2**30, 256)  # OpenVINO bf16, graph rewritten
    plan = TilePlan.make(512, 512, strips, overlap)
    assert (len(plan.rows), len(plan.cols)) == (2, 1), "two full-width windows: the strip memory of one row"
    # batches of tiles share the budget; a tiny budget still gives a workable tile
    assert _plan_pixels(2048, 2048, choose_tiles(2048, 2048, scale, overlap, budget, per_px, batch=4), overlap) > best
    assert choose_tiles(2048, 2048, scale, overlap, 10**6, per_px) == (MIN_AUTO_TILE, MIN_AUTO_TILE)


def test_a_cpu_s_cache_window_caps_the_windows_even_when_the_whole_image_fits():
    """``max_window`` (a CPU backend's ``cache_window_pixels``): an image whose whole fits the budget still runs in
    windows of at most that many input pixels, the plan with the fewest pixels among them; one within it runs whole;
    when no window that small fits the budget, the budget alone decides."""
    scale, overlap, per_px, budget, cap = 4, 8, 256, 2**30, 272 * 272
    assert choose_tiles(384, 512, scale, overlap, budget, per_px) == (0, 0)
    tiles = choose_tiles(384, 512, scale, overlap, budget, per_px, max_window=cap)
    plan = TilePlan.make(384, 512, tiles, overlap)
    windows = [(r.window[1] - r.window[0]) * (c.window[1] - c.window[0]) for r in plan.rows for c in plan.cols]
    assert max(windows) <= cap and len(windows) > 1, (tiles, windows)
    best = _plan_pixels(384, 512, tiles, overlap)
    for th in range(MIN_AUTO_TILE, 385, 3):
        for tw in range(MIN_AUTO_TILE, 513, 3):
            (nh, wh), (nw, ww) = axis_windows(384, th, overlap), axis_windows(512, tw, overlap)
            if wh * ww <= cap:
                assert nh * wh * nw * ww >= best
    assert choose_tiles(256, 256, scale, overlap, budget, per_px, max_window=cap) == (0, 0), "within the cap: whole"
    tight = choose_tiles(2048, 2048, scale, overlap, 10**6, per_px, max_window=cap)
    assert tight == choose_tiles(2048, 2048, scale, overlap, 10**6, per_px)


def test_auto_tile_follows_the_budget(tmp_path):
    from bench.tiny_models import make_nearest_model
    from model.engine import Upscaler

    up = Upscaler.from_file(make_nearest_model(tmp_path / "n.onnx", scale=4), backend="onnxruntime",
                            memory_budget=64 * 2**20)
    assert up.tile == "auto"
    assert up.tile_for(40, 40) == (0, 0)
    tiles = up.tile_for(400, 400)
    assert tiles != (0, 0) and all(t == 0 or MIN_AUTO_TILE <= t < 400 for t in tiles)
    img = np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    np.testing.assert_array_equal(up.upscale(img), img.repeat(4, 0).repeat(4, 1))  # exact through any tiling


def test_the_tile_sweep_times_each_tile_against_the_whole_image(tmp_path):
    """``srgan bench engine --tile-sweep``: a row per precision and input, a ratio and a seam PSNR for each tile
    smaller than the input (the nearest model tiles exactly: infinite seam PSNR), and auto's plan."""
    from bench.engine import SWEEP_TILES, tile_sweep
    from bench.tiny_models import make_nearest_model

    model = make_nearest_model(tmp_path / "n.onnx", scale=4)
    rows = tile_sweep(model, "onnxruntime", ["f32"], [(144, 200)], repeat=1)
    assert len(rows) == 1
    row = rows[0]
    assert row["input"] == "200x144" and row["precision"] == "f32" and row["whole_s"] > 0
    assert set(row["whole_vs_tiled"]) == {str(t) for t in SWEEP_TILES if 0 < t < 200}
    assert all(v > 0 for v in row["whole_vs_tiled"].values())
    assert all(v == float("inf") for v in row["seam_psnr_db"].values())
    assert len(row["auto_plan"]) == 2


def test_openvino_caps_windows_where_they_were_measured_faster():
    """The cache window OpenVINO's CPU backend gets (``model.backends.cache_window``): bf16 on any CPU, int8 only
    with AMX-INT8 (with VNNI alone its time per pixel is flat from 264 to 520 pixels, so small windows only add
    their overlaps), never f32 or another device."""
    from model.backends import CACHE_WINDOW_PIXELS, cache_window

    vnni, amx = {"avx512f", "avx512_vnni", "avx512_bf16"}, {"avx512f", "avx512_vnni", "amx_bf16", "amx_int8"}
    assert cache_window("CPU", "bf16", vnni) == cache_window("CPU", "bf16", amx) == CACHE_WINDOW_PIXELS
    assert cache_window("CPU", "int8", amx) == CACHE_WINDOW_PIXELS
    assert cache_window("CPU", "int8", vnni) is None
    assert cache_window("CPU", "f32", amx) is None and cache_window("GPU", "bf16", amx) is None
