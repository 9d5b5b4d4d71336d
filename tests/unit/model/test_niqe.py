"""NIQE against the reference values of ../shared/data/metrics (Set14 HR, quality-protocol crop)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bench.data import shared_data
from model.niqe import NiqeModel, matlab_imresize_half, niqe
from model.quality import crop_to_multiple

pytestmark = pytest.mark.unit

REFERENCE = {
    "baboon": 5.7296, "barbara": 4.5839, "bridge": 2.4864, "coastguard": 5.3512, "comic": 4.1388,
    "face": 8.4930, "flowers": 2.8860, "foreman": 5.9350, "lenna": 5.1971, "man": 3.6622,
    "monarch": 3.4985, "pepper": 7.0635, "ppt3": 5.4473, "zebra": 3.2759,
}


def _hr(name: str) -> np.ndarray:
    with Image.open(shared_data() / "bench" / "Set14" / f"{name}.png") as img:
        return crop_to_multiple(np.asarray(img.convert("RGB")), 4)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_niqe_matches_the_reference_values(name):
    assert niqe(_hr(name)) == pytest.approx(REFERENCE[name], abs=0.01)


def test_the_shipped_pristine_model_is_the_shared_one():
    shipped = NiqeModel.load()
    shared = NiqeModel.load(shared_data() / "metrics" / "niqe_pris_params.npz")
    assert np.array_equal(shipped.mu, shared.mu) and np.array_equal(shipped.cov, shared.cov)


def test_blur_and_noise_score_worse_than_the_photo():
    hr = _hr("zebra")
    blurred = np.asarray(Image.fromarray(hr).reduce(4).resize(hr.shape[1::-1], Image.Resampling.BICUBIC))
    assert niqe(blurred) > niqe(hr) + 1.0


def test_matlab_half_resize_of_a_ramp_and_a_constant():
    const = np.full((96, 64), 7.0, np.float32)
    assert np.allclose(matlab_imresize_half(const), 7.0, atol=1e-5)
    ramp = np.tile(np.arange(64, dtype=np.float64), (8, 1))
    half = matlab_imresize_half(ramp)
    assert half.shape == (4, 32)
    # away from the borders the antialiased cubic of a ramp is the ramp sampled between pixel pairs
    assert np.allclose(half[:, 4:-4], (np.arange(32)[4:-4] * 2 + 0.5)[None, :], atol=1e-6)


def test_too_small_an_image_is_a_clear_error():
    with pytest.raises(ValueError, match="96x96"):
        niqe(np.zeros((50, 200, 3), np.uint8))
