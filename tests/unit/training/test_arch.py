"""Generator and discriminator shapes, and the zero-initialised residual blocks."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.unit, pytest.mark.train]


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_generator_output_shape_on_odd_sizes(scale):
    from training.arch import build_generator

    gen = build_generator(scale=scale, filters=8, blocks=2)
    out = gen(np.zeros((2, 7, 11, 3), np.float32), training=False)
    assert tuple(out.shape) == (2, 7 * scale, 11 * scale, 3)


def test_generator_output_range_is_0_255():
    from training.arch import build_generator

    gen = build_generator(scale=2, filters=8, blocks=1)
    out = np.asarray(gen(np.random.default_rng(0).uniform(0, 255, (1, 9, 9, 3)).astype(np.float32)))
    assert out.min() >= 0.0 and out.max() <= 255.0


def test_generator_rejects_other_scales():
    from training.arch import build_generator

    with pytest.raises(ValueError):
        build_generator(scale=3)


def test_full_generator_size():
    from training.arch import build_generator

    # 16 blocks, 64 filters, x4: the paper's SRResNet, about 1.55 M parameters.
    assert build_generator().count_params() == 1_554_883


def test_zero_init_residual_blocks_start_as_identity():
    import keras

    from training.arch import build_generator

    gen = build_generator(scale=2, filters=8, blocks=3, zero_init_residual=True)
    head = gen.get_layer("head_prelu").output
    last_block = gen.get_layer("res2_add").output
    probe = keras.Model(gen.input, [head, last_block])
    a, b = probe(np.random.default_rng(0).uniform(0, 255, (1, 8, 8, 3)).astype(np.float32), training=False)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_discriminator_output_shape():
    from training.arch import build_discriminator

    disc = build_discriminator(hr_size=32, filters=8)
    out = disc(np.zeros((3, 32, 32, 3), np.float32), training=False)
    assert tuple(out.shape) == (3, 1)
    assert np.all((np.asarray(out) >= 0) & (np.asarray(out) <= 1))


def test_unet_discriminator_judges_every_pixel_and_is_spectrally_normalised():
    import keras

    from training.arch import build_unet_discriminator

    disc = build_unet_discriminator(filters=8)
    for h, w in ((32, 32), (48, 64)):  # any size that is a multiple of 8
        out = disc(np.random.default_rng(0).uniform(0, 255, (2, h, w, 3)).astype(np.float32), training=False)
        assert tuple(out.shape) == (2, h, w, 1)
        assert np.all((np.asarray(out) > 0) & (np.asarray(out) < 1))
    wrapped = [layer for layer in disc.layers if isinstance(layer, keras.layers.SpectralNormalization)]
    assert len(wrapped) == 8  # all but the first and the last convolution
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in disc.layers)


# --- the compact generator (the fast tier) ---------------------------------------------------------------------


def _compact_flops(scale: int, filters: int, convs: int, global_skip: str = "bicubic") -> float:
    """By hand: 3x3 convolutions 3 -> F, convs x F -> F, F -> 3 s^2, all at input resolution; plus the bicubic
    skip's fixed 5x5 convolutions 3 -> 3 s^2: two for ``bicubic`` (the image and the in-image weights), one for
    ``bicubic_edge`` (``BicubicUpscale``)."""
    body = 9 * 3 * filters + convs * 9 * filters * filters + 9 * filters * 3 * scale**2
    skip = {"bicubic": 2, "bicubic_edge": 1, "none": 0}[global_skip] * 25 * 3 * 3 * scale**2
    return 2.0 * (body + skip)


@pytest.mark.parametrize(("scale", "global_skip"), [(2, "bicubic"), (4, "bicubic"), (4, "bicubic_edge"), (4, "none")])
def test_compact_shapes_parameters_and_flops(scale, global_skip):
    from model.graph import flops_per_input_pixel
    from training.arch import build_compact
    from training.export import keras_to_onnx

    gen = build_compact(scale=scale, filters=8, convs=2, global_skip=global_skip)
    out = gen(np.zeros((2, 7, 11, 3), np.float32), training=False)
    assert tuple(out.shape) == (2, 7 * scale, 11 * scale, 3)
    convs = [layer for layer in gen.layers if layer.name.endswith("_conv")]
    assert [c.kernel.shape for c in convs] == [(3, 3, 3, 8), (3, 3, 8, 8), (3, 3, 8, 8), (3, 3, 8, 3 * scale**2)]
    prelus = [layer for layer in gen.layers if "prelu" in layer.name]
    assert len(prelus) == 3 and all(p.alpha.shape == (1, 1, 8) for p in prelus)  # shared over height and width
    assert not any("batch_normalization" in type(layer).__name__.lower() for layer in gen.layers)
    assert flops_per_input_pixel(keras_to_onnx(gen)) == _compact_flops(scale, 8, 2, global_skip)


def test_full_compact_is_realesrgans_size_and_under_a_third_of_srresnets_flops():
    from training.arch import build_compact

    gen = build_compact(scale=4, filters=64, convs=16)
    # SRVGGNetCompact x4, 64 filters, 16 convs: 621,424 weights, as Real-ESRGAN's (srgan import counts 621,428
    # for animevideov3: its graph's initializers include the 4 scales of its nearest skip's Resize)
    assert gen.count_params() == 621_424
    assert _compact_flops(4, 64, 16) == 1_252_800
    assert _compact_flops(4, 64, 16) / 4_450_752 < 0.3  # srresnet_x4.onnx, read off its graph the same way


def test_untrained_full_compact_keeps_its_signal_through_the_body():
    """The tail starts at zero, so what it learns from is the body's output: through the full depth (17 convolutions
    and PReLUs starting as ReLUs) that output keeps the scale of the head's instead of vanishing (Glorot's default
    left it at about 1e-3 of it, and the network never left its bicubic skip)."""
    import keras

    from training.arch import build_compact

    gen = build_compact(scale=4, filters=64, convs=16, global_skip="bicubic_edge")
    probe = keras.Model(gen.input, [gen.get_layer("head_prelu").output, gen.get_layer("body15_prelu").output])
    lr = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    head, last = (np.asarray(t) for t in probe(lr, training=False))
    assert 0.1 < last.std() / head.std() < 10


@pytest.mark.parametrize("arch", ["compact", "span"])
@pytest.mark.parametrize(("global_skip", "edges"), [("bicubic", "renormalise"), ("bicubic_edge", "replicate")])
def test_untrained_fast_tier_networks_are_their_bicubic_skip(arch, global_skip, edges):
    from training.arch import BicubicUpscale, build_generator

    gen = build_generator(arch=arch, scale=4, filters=8, blocks=2, global_skip=global_skip)
    lr = np.random.default_rng(0).uniform(0, 255, (2, 16, 24, 3)).astype(np.float32)
    bicubic = np.clip(np.asarray(BicubicUpscale(4, edges=edges)(lr)), 0, 255)
    np.testing.assert_array_equal(np.asarray(gen(lr, training=False)), bicubic)
    assert np.abs(bicubic[:, 2:-2] - bicubic[:, 3:-1]).max() > 1, "a real image, not a constant"


def test_replicated_edges_change_only_the_border_and_take_any_size():
    """``bicubic_edge``'s skip equals the renormalised one from two input pixels in (its taps reach two out), and
    runs on images down to one pixel (slices, not a reflection that needs more pixels than it pads)."""
    from training.arch import BicubicUpscale

    lr = np.random.default_rng(1).uniform(0, 255, (1, 9, 12, 3)).astype(np.float32)
    a = np.asarray(BicubicUpscale(4)(lr))
    b = np.asarray(BicubicUpscale(4, edges="replicate")(lr))
    np.testing.assert_allclose(b[:, 8:-8, 8:-8], a[:, 8:-8, 8:-8], atol=1e-3)
    assert np.abs(b - a).max() > 1
    for h, w in ((1, 1), (1, 3), (2, 2)):
        flat = np.full((1, h, w, 3), 77.0, np.float32)
        np.testing.assert_allclose(np.asarray(BicubicUpscale(4, edges="replicate")(flat)), 77.0, atol=1e-3)


def test_compact_without_skip_maps_to_0_255():
    from training.arch import build_generator

    gen = build_generator(arch="compact", scale=2, filters=8, blocks=1, global_skip="none")
    out = np.asarray(gen(np.random.default_rng(0).uniform(0, 255, (1, 9, 9, 3)).astype(np.float32)))
    assert out.shape == (1, 18, 18, 3) and out.min() >= 0.0 and out.max() <= 255.0 and out.std() > 0


def test_build_generator_rejects_unknown_architectures():
    from training.arch import build_generator

    with pytest.raises(ValueError, match="arch"):
        build_generator(arch="rrdb")  # type: ignore[arg-type]


def test_span_blocks_gate_their_sum_with_a_centred_sigmoid_and_the_cat_sees_four_tensors():
    """SPAN's block: three 3x3 convolutions (SiLU after the first two), then ``(y + x) * (sigmoid(y) - 0.5)``; the
    1x1 ``cat_conv`` reads the head, the body convolution, the first block's output and the last block's first
    convolution, as spandrel's SPAN.forward."""
    import keras

    from training.arch import build_span

    gen = build_span(scale=2, filters=8, blocks=3, global_skip="none")
    names = ["head_conv", "block0_conv3", "block0_attend", "block1_attend", "block2_conv1", "block2_conv3",
             "block2_attend", "body_conv", "cat"]
    probe = keras.Model(gen.input, [gen.get_layer(n).output for n in names])
    lr = np.random.default_rng(0).uniform(0, 255, (1, 12, 10, 3)).astype(np.float32)
    t = dict(zip(names, (np.asarray(o) for o in probe(lr, training=False))))

    def sigmoid(v):
        return 1 / (1 + np.exp(-v))

    np.testing.assert_allclose(t["block0_attend"], (t["block0_conv3"] + t["head_conv"])
                               * (sigmoid(t["block0_conv3"]) - 0.5), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(t["block2_attend"], (t["block2_conv3"] + t["block1_attend"])
                               * (sigmoid(t["block2_conv3"]) - 0.5), rtol=1e-4, atol=1e-5)
    expected_cat = np.concatenate([t["head_conv"], t["body_conv"], t["block0_attend"], t["block2_conv1"]], -1)
    np.testing.assert_allclose(t["cat"], expected_cat, rtol=1e-6)
    silu = gen.get_layer("block0_silu1")
    v = np.linspace(-4, 4, 9, dtype=np.float32)
    np.testing.assert_allclose(np.asarray(silu(v)), v * sigmoid(v), rtol=1e-5, atol=1e-6)
    out = np.asarray(gen(lr))
    assert out.shape == (1, 24, 20, 3) and out.min() >= 0.0 and out.max() <= 255.0


def test_span_needs_a_block():
    from training.arch import build_span

    with pytest.raises(ValueError, match="block"):
        build_span(blocks=0)
