import numpy as np
import pytest

from bench.data import training_photo
from bench.tiny_models import make_srresnet_model
from core.settings import Settings
from model.engine import Upscaler

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def srresnet_path(tmp_path_factory):
    """A random-weight generator of the real SRResNet x4 shape (16 blocks, 64 filters)."""
    return make_srresnet_model(tmp_path_factory.mktemp("srresnet") / "srresnet_x4.onnx", scale=4)


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_tiled_matches_whole_image_at_default_settings_on_a_photo(srresnet_path, backend):
    defaults = Settings()
    photo = training_photo(3)[:131, :257]  # odd sizes the default tile does not divide
    up = Upscaler.from_file(srresnet_path, backend=backend, tile=defaults.tile, overlap=defaults.overlap)
    whole = up.upscale(photo, tile=0)
    tiled = up.upscale(photo)
    assert tiled.shape == (131 * 4, 257 * 4, 3)
    assert whole.std() > 5  # a real image came out, not a constant
    assert psnr(tiled, whole) >= 50.0
    # the default auto tile runs this photo whole (it fits the budget): a fixed tile that does not divide
    # either side makes the seams real (2 x 3 tiles at the default overlap)
    fixed = up.upscale(photo, tile=96)
    assert not np.array_equal(fixed, whole) and psnr(fixed, whole) >= 50.0


def test_backends_agree(srresnet_path):
    photo = training_photo(5)[:64, :80]
    ort = Upscaler.from_file(srresnet_path, backend="onnxruntime", tile=0).upscale(photo)
    ov = Upscaler.from_file(srresnet_path, backend="openvino", tile=0).upscale(photo)
    assert psnr(ort, ov) >= 50.0


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_rectangular_auto_plan_blends_like_the_whole_image(srresnet_path, backend):
    from model.tiling import TilePlan, choose_tiles

    photo = training_photo(3)[:131, :257]
    probe = Upscaler.from_file(srresnet_path, backend=backend, tile=0)
    per_px = probe.backend.working_bytes_per_output_pixel
    # the smallest budget (in 1 MiB steps) whose plan has tiles of two different sides
    budget = next(b * 2**20 for b in range(16, 2048)
                  if len(set(choose_tiles(131, 257, 4, 8, b * 2**20, per_px))) == 2)
    up = Upscaler(probe.backend, probe.contract, tile="auto", overlap=8, memory_budget=budget)
    tiles = up.tile_for(131, 257)
    plan = TilePlan.make(131, 257, tiles, 8)
    assert tiles[0] != tiles[1] and plan.count > 1
    whole = up.upscale(photo, tile=0)
    tiled = up.upscale(photo)
    assert tiled.shape == whole.shape
    assert psnr(tiled, whole) >= 50.0
