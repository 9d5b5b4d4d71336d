"""The quality protocol: degradation sizes, PSNR by hand, SSIM properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from model.quality import (
    bicubic_downscale,
    bicubic_upscale,
    color_shift,
    crop_to_multiple,
    flat_region_error,
    psnr_y,
    rgb_to_y,
    ssim_y,
)

pytestmark = pytest.mark.unit


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_crop_to_multiple_cuts_bottom_and_right():
    hr = _image(37, 50)
    out = crop_to_multiple(hr, 4)
    assert out.shape == (36, 48, 3)
    assert np.array_equal(out, hr[:36, :48])


def test_crop_to_multiple_rejects_tiny_images():
    with pytest.raises(ValueError):
        crop_to_multiple(_image(3, 9), 4)


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_bicubic_sizes(scale):
    hr = _image(67, 45)
    lr = bicubic_downscale(hr, scale)
    assert lr.shape == (67 // scale, 45 // scale, 3) and lr.dtype == np.uint8
    assert bicubic_upscale(lr, scale).shape == ((67 // scale) * scale, (45 // scale) * scale, 3)


def test_bicubic_downscale_is_pillow_bicubic_of_the_cropped_image():
    hr = _image(41, 30)
    expected = np.asarray(Image.fromarray(hr[:40, :28]).resize((7, 10), Image.Resampling.BICUBIC))
    assert np.array_equal(bicubic_downscale(hr, 4), expected)


def test_rgb_to_y_bt601_range():
    assert rgb_to_y(np.zeros((1, 1, 3)))[0, 0] == pytest.approx(16.0)
    assert rgb_to_y(np.full((1, 1, 3), 255.0))[0, 0] == pytest.approx(235.0)
    red = rgb_to_y(np.array([[[255, 0, 0]]], dtype=np.uint8))[0, 0]
    assert red == pytest.approx(16 + 65.481)


def test_psnr_by_hand():
    # Uniform images differing by 10 in every channel: Y differs by 10 * (65.481+128.553+24.966)/255.
    a = np.full((20, 20, 3), 100, np.uint8)
    b = np.full((20, 20, 3), 110, np.uint8)
    dy = 10 * (65.481 + 128.553 + 24.966) / 255
    assert psnr_y(a, b, crop=4) == pytest.approx(10 * math.log10(255**2 / dy**2))


def test_psnr_border_crop_ignores_the_border():
    a = _image(24, 24)
    b = a.copy()
    b[:2] = 0  # damage only the 2-pixel top border
    assert psnr_y(a, b, crop=2) == math.inf
    assert psnr_y(a, b, crop=0) < 40


def test_ssim_identity_and_order():
    a = _image(48, 40)
    assert ssim_y(a, a, crop=4) == pytest.approx(1.0)
    noisy = np.clip(a.astype(int) + np.random.default_rng(1).integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    noisier = np.clip(a.astype(int) + np.random.default_rng(1).integers(-60, 61, a.shape), 0, 255).astype(np.uint8)
    assert 1.0 > ssim_y(a, noisy, crop=4) > ssim_y(a, noisier, crop=4)
    assert ssim_y(a, noisy) == pytest.approx(ssim_y(noisy, a))


def test_ssim_of_constant_images_with_a_luminance_shift():
    # Constant images: variances and covariance are 0, so SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1).
    a = np.full((30, 30, 3), 100, np.uint8)
    b = np.full((30, 30, 3), 140, np.uint8)
    ya, yb = rgb_to_y(a)[0, 0], rgb_to_y(b)[0, 0]
    c1 = (0.01 * 255) ** 2
    assert ssim_y(a, b) == pytest.approx((2 * ya * yb + c1) / (ya**2 + yb**2 + c1))


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError):
        psnr_y(_image(20, 20), _image(20, 24))


def test_flat_region_error_sees_noise_on_flat_ground_truth_only():

    rng = np.random.default_rng(0)
    hr = np.full((64, 64, 3), 120, np.uint8)
    hr[:, 32:] = (rng.random((64, 32, 3)) * 255).astype(np.uint8)  # right half: texture, never flat
    noise = rng.normal(0, 6, hr.shape)
    on_flat = hr.astype(np.float64).copy()
    on_flat[:, :26] += noise[:, :26]
    on_texture = hr.astype(np.float64).copy()
    on_texture[:, 40:] += noise[:, 40:]
    assert flat_region_error(hr, hr) == 0.0
    assert flat_region_error(on_flat, hr) > 2.0  # Y error std of RGB noise sigma 6
    assert flat_region_error(on_texture, hr) == 0.0
    offset = hr.astype(np.float64) + 10  # a uniform shift is colour shift's business, not this
    assert flat_region_error(offset, hr, crop=4) == pytest.approx(0.0, abs=1e-9)
    assert np.isnan(flat_region_error(hr[:, 34:], hr[:, 34:]))  # no flat pixel


def test_color_shift_is_the_largest_channel_mean_difference():
    hr = np.full((8, 8, 3), 100, np.uint8)
    sr = hr.copy()
    sr[..., 2] += 3
    assert color_shift(sr, hr) == 3.0 and color_shift(hr, hr) == 0.0
