"""Tile memory: ``tile="auto"`` sizes tiles by a budget, and a tile that runs out of memory is split, not fatal.

The out-of-memory runs are real: a child process caps its own address space
(RLIMIT_AS) just above what the loaded model needs, so the runtime's own
allocation fails inside the inference of a whole 192x192 image.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model.locate import WEIGHTS_DIR
from model.tiling import MIN_AUTO_TILE, choose_tile, tile_memory

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]
SHIPPED = WEIGHTS_DIR / "srresnet_x4.onnx"

CHILD = """
import json, resource, sys
import numpy as np
from bench.engine import psnr, test_image
from model.engine import Upscaler
up = Upscaler.from_file(sys.argv[1], backend=sys.argv[2], precision="f32", tile=0, overlap=8)
img = test_image(192)
up.upscale(img[:40, :40])  # warm-up: kernels and threads exist
vm = int([l for l in open("/proc/self/status") if l.startswith("VmSize")][0].split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + 350 * 2**20, resource.RLIM_INFINITY))
out = up.upscale(img)  # the whole image at once does not fit
reference = up.upscale(img, tile=96)  # what one split of the whole image runs
print(json.dumps({"splits": up.oom_splits, "shape": list(out.shape), "psnr": psnr(out, reference),
                  "equal": bool(np.array_equal(out, reference))}))
"""


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_a_tile_that_runs_out_of_memory_is_split_and_retried(backend):
    res = subprocess.run([sys.executable, "-c", CHILD, str(SHIPPED), backend], capture_output=True, text=True,
                         timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["shape"] == [768, 768, 3]
    assert report["splits"] >= 1, "the whole image was expected not to fit under the cap"
    assert "re-splitting the 192x192 tile" in res.stderr
    if report["splits"] == 1:  # split once: exactly the 96-pixel plan
        assert report["equal"]
    else:  # split again further down: other seams, same picture
        assert report["psnr"] >= 50


def test_choose_tile_is_the_largest_that_fits():
    per_px, scale, overlap = 640, 4, 8
    budget = 2**30
    assert choose_tile(200, 300, scale, overlap, budget, per_px) == 0, "a small image runs whole"
    tile = choose_tile(2048, 2048, scale, overlap, budget, per_px)
    side = tile + 2 * overlap
    assert tile_memory(side, side, 2048, scale, per_px) <= budget < tile_memory(side + 1, side + 1, 2048, scale, per_px)
    assert 200 < tile < 300
    # batches of tiles share the budget; a tiny budget still gives a workable tile
    assert choose_tile(2048, 2048, scale, overlap, budget, per_px, batch=4) < tile
    assert choose_tile(2048, 2048, scale, overlap, 10**6, per_px) == MIN_AUTO_TILE


def test_auto_tile_follows_the_budget(tmp_path):
    from bench.tiny_models import make_nearest_model
    from model.engine import Upscaler

    up = Upscaler.from_file(make_nearest_model(tmp_path / "n.onnx", scale=4), backend="onnxruntime",
                            memory_budget=64 * 2**20)
    assert up.tile == "auto"
    assert up.tile_for(40, 40) == 0
    tile = up.tile_for(400, 400)
    assert MIN_AUTO_TILE <= tile < 400
    img = np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    np.testing.assert_array_equal(up.upscale(img), img.repeat(4, 0).repeat(4, 1))  # exact through any tiling
