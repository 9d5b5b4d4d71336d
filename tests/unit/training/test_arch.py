"""Generator and discriminator shapes, and the zero-initialised residual blocks."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.train


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
