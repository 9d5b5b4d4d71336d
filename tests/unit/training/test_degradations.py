"""The real-world degradation model: each stage checked statistically, the pipeline's shapes and determinism,
the evaluation conditions and ``srgan train degrade``. No TensorFlow."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.strength import jpeg_quality, standard_table
from training import degradations as d
from training.config import DegradeConfig

pytestmark = pytest.mark.unit


def _photo(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """A smooth image with edges (gradients and a disc), uint8."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 / w, y * 255 / h, 128 + 60 * np.sin(x / 7.0)], axis=2)
    img[(y - h / 2) ** 2 + (x - w / 2) ** 2 < (h / 4) ** 2] = (230, 40, 40)
    return np.clip(img + np.random.default_rng(seed).normal(0, 1, img.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("seed", range(40))
def test_random_kernels_sum_to_one_on_the_21_grid(seed):
    rng = np.random.default_rng(seed)
    k = d.random_kernel(rng, (0.2, 3.0), (0.5, 4.0), (1.0, 2.0), sinc_prob=0.3)
    assert k.shape == (21, 21)
    assert k.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.isfinite(k).all()


def test_kernels_have_the_shape_their_parameters_say():
    iso = d.gaussian_kernel(2.0, 2.0, 0.0)
    assert np.allclose(iso, iso.T, atol=1e-7) and np.allclose(iso, iso[::-1], atol=1e-7)
    assert iso.argmax() == 10 * 21 + 10
    aniso = d.gaussian_kernel(3.0, 0.5, 0.0)  # wide along x, narrow along y
    assert aniso[10, :].sum() > 3 * aniso[:, 10].sum()
    turned = d.gaussian_kernel(3.0, 0.5, np.pi / 2)
    assert np.allclose(turned, aniso.T, atol=1e-6)
    # a plateau kernel is flatter at the top than a Gaussian of the same sigma
    plateau = d.plateau_kernel(2.0, 2.0, 0.0, 2.0)
    assert plateau[10, 11] / plateau[10, 10] > iso[10, 11] / iso[10, 10]
    # generalized: beta < 1 has heavier tails than the Gaussian
    heavy = d.generalized_gaussian_kernel(2.0, 2.0, 0.0, 0.5)
    assert heavy[10, 0] / heavy[10, 10] > iso[10, 0] / iso[10, 10]


def test_sinc_kernel_rings_and_sums_to_one():
    k = d.sinc_kernel(np.pi / 3)
    assert k.sum() == pytest.approx(1.0, abs=1e-5)
    assert k.min() < 0  # negative lobes: ringing at edges
    # J1 by the integral form against known values
    assert d._bessel_j1(np.array([1.0, 3.8317, 5.0])) == pytest.approx([0.4400506, 0.0, -0.3275791], abs=1e-5)


def test_blur_keeps_constants_and_matches_a_direct_convolution():
    img = _photo().astype(np.float32) / 255
    flat = np.full((40, 50, 3), 0.3, np.float32)
    k = d.gaussian_kernel(1.5, 0.7, 0.4)
    assert np.allclose(d.blur(flat, k), 0.3, atol=1e-5)
    delta = np.zeros((21, 21), np.float32)
    delta[10, 10] = 1
    assert np.allclose(d.blur(img, delta), img, atol=1e-5)
    out = d.blur(img, k)
    assert out.shape == img.shape
    y, x = 40, 60  # an interior pixel: the kernel (odd, centred) applied directly
    direct = (img[y - 10 : y + 11, x - 10 : x + 11, :] * k[::-1, ::-1, None]).sum(axis=(0, 1))
    assert out[y, x] == pytest.approx(direct, abs=1e-5)


@pytest.mark.parametrize("sigma", [2.0, 10.0, 25.0])
def test_gaussian_noise_has_the_variance_asked(sigma):
    img = np.full((256, 256, 3), 0.5, np.float32)
    noise = d.gaussian_noise(img, np.random.default_rng(1), sigma, gray=False) - img
    assert noise.std() * 255 == pytest.approx(sigma, rel=0.02)
    assert abs(noise.mean()) * 255 < 0.1
    assert abs(np.corrcoef(noise[..., 0].ravel(), noise[..., 1].ravel())[0, 1]) < 0.02  # colour: independent
    gray = d.gaussian_noise(img, np.random.default_rng(1), sigma, gray=True) - img
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])


def test_poisson_noise_grows_with_brightness_and_scale():
    rng = np.random.default_rng(2)
    levels = np.repeat(np.linspace(0.05, 0.95, 256, dtype=np.float32)[None, :, None], 256, axis=0).repeat(3, 2)
    noise = d.poisson_noise(levels, rng, 1.0, gray=False) - levels
    dark, bright = noise[:, 16:48].var(), noise[:, 112:144].var()  # levels 0.11-0.22 and 0.45-0.56
    assert bright > 3 * dark  # shot noise: variance proportional to the signal
    assert abs(noise.mean()) < 2e-3
    vals = 256.0  # 256 distinct levels in the image: variance = level / vals (away from the ends of the range)
    expected = levels[:, 112:144].mean() / vals
    assert bright == pytest.approx(expected, rel=0.1)
    half = d.poisson_noise(levels, np.random.default_rng(2), 0.5, gray=False) - levels
    assert half[:, 112:144].var() == pytest.approx(bright / 4, rel=0.1)


@pytest.mark.parametrize("colour", [(250, 10, 10), (235, 235, 235), (18, 18, 18), (30, 120, 220)])
@pytest.mark.parametrize("kind", ["gaussian", "poisson"])
def test_strong_noise_keeps_the_colour_of_saturated_and_dark_regions(colour, kind):
    """Added then clipped, noise would brighten blacks and wash out strong colours (a model trained on that
    shifts the colours of clean inputs): near 0 and 1 it shrinks instead, and every channel keeps its mean."""
    rng = np.random.default_rng(3)
    img = np.zeros((256, 256, 3), np.float32) + np.array(colour, np.float32) / 255
    img = np.clip(img + rng.integers(-2, 3, img.shape) / 255, 0, 1).astype(np.float32)  # 256 levels' worth
    noisy = (d.gaussian_noise(img, rng, 30.0, gray=False) if kind == "gaussian"
             else d.poisson_noise(img, rng, 3.0, gray=False))
    shift = (np.clip(noisy, 0, 1) - img).reshape(-1, 3).mean(axis=0) * 255
    assert np.abs(shift).max() < 0.5, shift
    assert (noisy - img).std() > 0, "still noisy"


@pytest.mark.parametrize("quality", [30, 60, 75, 95])
def test_jpeg_is_a_real_libjpeg_file_with_the_quality_tables(quality):
    img = _photo().astype(np.float32) / 255
    data = d.jpeg_encode(img, quality)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG"
        assert np.array_equal(np.asarray(getattr(im, "quantization")[0]), standard_table(quality))  # noqa: B009 - JpegImageFile only
        assert jpeg_quality(im) == quality
    out = d.jpeg(img, quality)
    assert out.shape == img.shape and out.dtype == np.float32
    err = np.abs(out - img).mean()
    assert 0 < err < 0.05


def test_resize_modes_and_sizes():
    img = _photo().astype(np.float32) / 255
    for mode in d.RESIZE_FILTERS:
        assert d.resize(img, (30, 41), mode).shape == (30, 41, 3)
        assert d.resize(img, (200, 150), mode).shape == (200, 150, 3)
        assert d.resize(img, (30, 41), mode).mean() == pytest.approx(img.mean(), abs=0.01)


def test_degrade_shapes_range_and_determinism():
    hr = _photo()
    cfg = DegradeConfig()
    outs = [d.degrade_u8(hr, (5, i), 4, cfg) for i in range(6)]
    assert all(o.shape == (24, 32, 3) and o.dtype == np.uint8 for o in outs)
    assert np.array_equal(outs[0], d.degrade_u8(hr, (5, 0), 4, cfg))  # same seed, same crop
    assert len({o.tobytes() for o in outs}) == 6  # different seeds, different degradations
    trace: list[str] = []
    f = d.degrade(hr, np.random.default_rng(0), 2, cfg, trace)
    assert f.shape == (48, 64, 3) and 0 <= f.min() and f.max() <= 1
    assert sum(t.startswith("jpeg") for t in trace) == 3  # one per pass and the final one
    assert trace[-1].startswith(("jpeg", "sinc"))


def test_degraded_images_are_worse_than_bicubic():
    """On average the degradation removes information: the LR differs from the clean bicubic LR."""
    from model.quality import bicubic_downscale

    hr = _photo(128, 128)
    clean = bicubic_downscale(hr, 4).astype(np.float64)
    errors = [np.abs(d.degrade_u8(hr, (0, i), 4, DegradeConfig()) - clean).mean() for i in range(8)]
    assert np.mean(errors) > 2.0


def test_order_is_shuffled_only_when_asked():
    hr = _photo()
    firsts = set()
    for i in range(30):
        trace: list[str] = []
        d.degrade(hr, np.random.default_rng(i), 4, DegradeConfig(second_blur_prob=1.0), trace)
        firsts.add(trace[0].split()[0])
    assert firsts >= {"blur", "resize"} and ({"colour", "gray"} & firsts)
    for i in range(10):
        trace = []
        d.degrade(hr, np.random.default_rng(i), 4, DegradeConfig(shuffle_order=False), trace)
        assert trace[0].startswith("blur")


def test_config_refuses_bad_ranges():
    with pytest.raises(ValueError, match="jpeg_range"):
        DegradeConfig(jpeg_range=(50, 120))
    with pytest.raises(ValueError, match="noise_sigma"):
        DegradeConfig(noise_sigma=(10.0, 5.0))
    with pytest.raises(ValueError, match="more than 1"):
        DegradeConfig(resize_up_prob=0.6, resize_down_prob=0.6)


@pytest.mark.parametrize("condition", list(d.CONDITIONS))
def test_conditions_are_fixed_uploads(condition):
    hr = _photo(128, 128)
    a = d.degrade_condition(hr, condition, 4, seed=3)
    assert a == d.degrade_condition(hr, condition, 4, seed=3)
    with Image.open(io.BytesIO(a.data)) as im:
        assert im.size == (32, 32)
        assert im.format == a.format.upper()
        if condition in ("jpeg", "noise-jpeg", "blur-jpeg"):
            assert jpeg_quality(im) == {"jpeg": 60, "noise-jpeg": 75, "blur-jpeg": 80}[condition]
    with pytest.raises(ValueError, match="unknown condition"):
        d.degrade_condition(hr, "fog", 4)


def test_srgan_train_degrade_writes_the_same_examples_for_a_seed(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_photo()).save(src / "a.png")
    Image.fromarray(_photo(seed=1)).save(src / "b.png")

    def run(out: Path, seed: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cli.main", "train", "degrade", str(src), str(out),
                               "--seed", str(seed), "--count", "2"], capture_output=True, text=True, timeout=120)

    first = run(tmp_path / "o1", 7)
    assert first.returncode == 0, first.stderr
    names = sorted(p.name for p in (tmp_path / "o1").iterdir())
    assert names == ["a_panel.png", "a_s7_0.png", "a_s7_1.png", "b_panel.png", "b_s7_0.png", "b_s7_1.png",
                     "degradations.json"]
    rows = json.loads((tmp_path / "o1" / "degradations.json").read_text())
    assert [r["file"] for r in rows] == ["a_s7_0.png", "a_s7_1.png", "b_s7_0.png", "b_s7_1.png"]
    assert all(r["applied"] for r in rows)
    assert "a_s7_0.png" in first.stdout and "jpeg q" in first.stdout
    with Image.open(tmp_path / "o1" / "a_panel.png") as panel:
        assert panel.size == (3 * 128 + 2 * 4, 96)
    assert run(tmp_path / "o2", 7).returncode == 0
    assert (tmp_path / "o1" / "a_s7_1.png").read_bytes() == (tmp_path / "o2" / "a_s7_1.png").read_bytes()
    assert run(tmp_path / "o3", 8).returncode == 0
    assert (tmp_path / "o1" / "a_s7_0.png").read_bytes() != (tmp_path / "o3" / "a_s8_0.png").read_bytes()

    result = subprocess.run([sys.executable, "-m", "cli.main", "train", "degrade", str(tmp_path / "nope"),
                             str(tmp_path / "o4")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "nope does not exist" in result.stderr


def test_the_light_model_is_taken_at_its_probability_and_is_one_resize_with_optional_noise_and_jpeg():
    hr = _photo()
    light = 0
    for i in range(200):
        trace: list[str] = []
        d.degrade(hr, np.random.default_rng(i), 4, DegradeConfig(light_prob=0.4), trace)
        if trace[0] == "light":
            light += 1
            assert sum(t.startswith("resize") for t in trace) == 1 and not any(t.startswith("sinc") for t in trace)
            assert sum(t.startswith("jpeg") for t in trace) <= 1
    assert 0.3 < light / 200 < 0.5  # binomial(200, 0.4): 5 standard deviations wide
    # with every option off it is exactly one resize to the LR size, by the filter it names
    cfg = DegradeConfig(light_prob=1.0, light_blur_prob=0.0, light_noise_prob=0.0, light_jpeg_prob=0.0)
    trace = []
    out = d.degrade(hr, np.random.default_rng(3), 4, cfg, trace)
    mode = trace[1].split()[1]
    expected = d.to_uint8(np.clip(d.resize(hr.astype(np.float32) / 255, (24, 32), mode), 0, 1))
    assert trace[0] == "light" and np.array_equal(d.to_uint8(out), expected)
    # JPEG on: the LR decodes from a file with the chosen quality's tables
    trace = []
    lr, data = d._degrade(hr, np.random.default_rng(4), 4, DegradeConfig(light_prob=1.0, light_jpeg_prob=1.0), trace)
    quality = int(trace[-1].removeprefix("jpeg q"))
    assert data is not None and jpeg_quality(Image.open(io.BytesIO(data))) == quality


def test_without_the_light_model_the_crops_are_what_they_were():
    """light_prob 0 draws nothing: a run started before the field existed resumes with the same crops."""
    hr = _photo()
    base = DegradeConfig()
    assert base.light_prob == 0
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    a = d.degrade(hr, rng_a, 4, base)
    rng_b.uniform()  # what a draw for the light model would have taken
    assert not np.array_equal(a, d.degrade(hr, rng_b, 4, base))
    assert np.array_equal(a, d.degrade(hr, np.random.default_rng(9), 4, base))
