"""The shipped GAN model srgan_x4 with its detail base srresnet_x4: the pair, the endpoints, every tile size."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.catalog.catalog import ModelCatalog
from core.catalog.load import build_upscaler
from core.catalog.shipped import WEIGHTS_DIR
from core.settings import Settings
from model.engine import Upscaler
from model.interpolate import check_pair

pytestmark = pytest.mark.integration

GAN, PSNR = WEIGHTS_DIR / "srgan_x4.onnx", WEIGHTS_DIR / "srresnet_x4.onnx"


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return Settings(_env_file=None, data_dir=tmp_path_factory.mktemp("data"), backend="onnxruntime", threads=2,
                    tile=0, overlap=0)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(7)
    smooth = rng.integers(0, 256, (6, 8, 3)).astype(np.float32)
    from PIL import Image

    base = np.asarray(Image.fromarray(smooth.astype(np.uint8)).resize((40, 30), Image.Resampling.BICUBIC))
    return np.clip(base.astype(np.int16) + rng.integers(-12, 13, base.shape), 0, 255).astype(np.uint8)


def _raw(upscaler: Upscaler, img: np.ndarray) -> np.ndarray:
    return upscaler._run([img])[0]


def test_the_card_names_srresnet_x4_as_detail_base_and_the_pair_matches():
    card = json.loads((WEIGHTS_DIR / "srgan_x4.card.json").read_text())
    assert card["detail_base"] == "srresnet_x4"
    assert card["training"]["losses"]["perceptual"]["name"] in ("random-vgg19", "vgg54")
    check_pair(PSNR, GAN)


def test_detail_0_is_srresnet_x4_and_detail_1_is_srgan_x4(settings, image):
    psnr = _raw(Upscaler.from_file(PSNR, backend="onnxruntime", tile=0, overlap=0), image)
    gan = _raw(Upscaler.from_file(GAN, backend="onnxruntime", tile=0, overlap=0), image)
    at0 = _raw(build_upscaler(settings, ModelCatalog(settings).blend(str(GAN), 0.0)), image)
    at1 = _raw(build_upscaler(settings, ModelCatalog(settings).blend(str(GAN), 1.0)), image)
    half = _raw(build_upscaler(settings, ModelCatalog(settings).blend(str(GAN), 0.5)), image)
    assert np.abs(at0 - psnr).max() <= 1e-3
    assert np.abs(at1 - gan).max() <= 1e-3
    assert np.abs(psnr - gan).max() > 1.0, "the GAN model must differ from its base"
    assert np.abs(half - psnr).max() > 0.1 and np.abs(half - gan).max() > 0.1


@pytest.mark.parametrize("tile", [0, 8, 16, 24, 40])
def test_no_nan_or_blank_tiles_at_any_tile_size(image, tile):
    up = Upscaler.from_file(GAN, backend="onnxruntime", tile=tile, overlap=min(8, tile // 4) if tile else 0)
    out = up.upscale(image)  # the engine raises on NaN or infinite values
    assert out.shape == (120, 160, 3)
    step = tile * up.scale if tile else max(out.shape)
    for y in range(0, out.shape[0], step):
        for x in range(0, out.shape[1], step):
            block = out[y:y + step, x:x + step].astype(np.float32)
            assert block.std() > 1.0, f"blank tile at ({x}, {y})"
    assert abs(float(out.mean()) - float(image.mean())) < 2.0, "no colour shift"
