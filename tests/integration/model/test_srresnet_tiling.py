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


def test_backends_agree(srresnet_path):
    photo = training_photo(5)[:64, :80]
    ort = Upscaler.from_file(srresnet_path, backend="onnxruntime", tile=0).upscale(photo)
    ov = Upscaler.from_file(srresnet_path, backend="openvino", tile=0).upscale(photo)
    assert psnr(ort, ov) >= 50.0
