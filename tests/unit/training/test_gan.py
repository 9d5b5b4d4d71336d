"""The adversarial stage with a randomly initialised VGG19, and the missing-weights message."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.unit, pytest.mark.train]


@pytest.fixture(scope="module")
def random_vgg():
    from training.losses import build_feature_extractor

    return build_feature_extractor(None, random=True)


def test_gan_step_runs_with_a_random_vgg(tmp_path, make_config, random_vgg):
    import tensorflow as tf

    from training.gan import GanStage
    from training.stage import Stage

    config = make_config(tmp_path, tmp_path, stage="gan", **{"gan.d_filters": 4})
    stage = GanStage(config, features=random_vgg)
    assert isinstance(stage, Stage)
    stage.build()
    hr = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    d_before = [v.numpy().copy() for v in stage.discriminator.trainable_variables]
    g_before = [v.numpy().copy() for v in stage.generator.trainable_variables]
    metrics = {k: float(v) for k, v in tf.function(stage.train_step)(hr[:, ::4, ::4], hr).items()}
    assert set(metrics) == {"g_loss", "content", "adversarial", "d_loss"}
    assert all(np.isfinite(v) for v in metrics.values())
    assert metrics["g_loss"] == pytest.approx(metrics["content"] + 1e-3 * metrics["adversarial"], rel=1e-4)
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(d_before, stage.discriminator.trainable_variables))
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(g_before, stage.generator.trainable_variables))


def test_gan_run_starts_from_the_pretrained_generator_and_checkpoints_everything(
    tmp_path, image_folder, make_config, monkeypatch, caplog
):
    """Without ImageNet weights, ``auto`` trains with the generic loss, says so, and saves that choice."""
    import logging

    import tensorflow as tf

    from training.arch import build_generator
    from training.config import TrainConfig
    from training.trainer import train

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr("training.losses.FALLBACK_CACHE", tmp_path / "fallback")
    pretrained = build_generator(scale=4, filters=8, blocks=1)
    pretrained.save_weights(str(tmp_path / "pre.weights.h5"))
    config = make_config(
        tmp_path,
        image_folder,
        stage="gan",
        steps=2,
        **{"gan.pretrained": str(tmp_path / "pre.weights.h5"), "gan.d_filters": 4, "generator.blocks": 1,
           "gan.perceptual_layers": ["block1_conv2", "block2_conv2"]},
    )
    assert config.gan.perceptual == "auto"
    with caplog.at_level(logging.WARNING, logger="training.losses"):
        result = train(config)
    assert "random-vgg19" in caplog.text and "--vgg-weights" in caplog.text
    assert TrainConfig.load(tmp_path / "run" / "config.json").gan.perceptual == "random-vgg19", (
        "a resumed run keeps the loss it started with"
    )
    assert result.step == 2
    names = tf.train.load_checkpoint(str(tmp_path / "run" / "checkpoints")).get_variable_to_shape_map()
    for part in ("generator", "discriminator", "g_optimizer", "d_optimizer", "step", "best_psnr"):
        assert any(name.startswith(part + "/") for name in names), part


def test_missing_vgg_weights_name_the_file_and_the_flag(tmp_path, monkeypatch):
    from training.losses import VGG19_NOTOP, VggWeightsMissing, build_feature_extractor, vgg19_weights_path

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr("training.losses.FALLBACK_CACHE", tmp_path / "fallback")
    with pytest.raises(VggWeightsMissing) as err:
        build_feature_extractor(None)
    message = str(err.value)
    assert VGG19_NOTOP in message and "--vgg-weights" in message and str(tmp_path / "keras" / "models") in message
    with pytest.raises(VggWeightsMissing, match="nowhere.h5"):
        vgg19_weights_path(tmp_path / "nowhere.h5")


# --- the generic perceptual loss (random-vgg19) and checkpoint picking -------------------------


@pytest.fixture(scope="module")
def random_vgg19():
    from training.losses import build_random_vgg19

    return build_random_vgg19(seed=0)


def test_random_vgg19_is_the_same_network_for_the_same_seed_only(random_vgg19):
    from training.losses import RANDOM_VGG19_LAYERS, build_random_vgg19

    x = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    again = build_random_vgg19(seed=0)(x)
    other = build_random_vgg19(seed=1, layers=["block1_conv2"])(x)
    first = random_vgg19(x)
    assert [int(f.shape[-1]) for f in first] == [64, 128, 256, 512, 512]
    assert len(RANDOM_VGG19_LAYERS) == 5
    for a, b in zip(first, again):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(first[0]), np.asarray(other))
    assert all(float(np.std(np.asarray(f))) > 0.05 for f in first), "deep features must not vanish"


def test_unknown_layers_are_refused():
    from training.losses import build_random_vgg19

    with pytest.raises(ValueError, match="block9_conv1"):
        build_random_vgg19(layers=["block9_conv1"])


def test_generic_perceptual_loss_is_zero_on_equal_images_and_grows_with_blur(random_vgg19):
    import tensorflow as tf

    from training.losses import random_perceptual_loss

    loss = random_perceptual_loss(random_vgg19)
    hr = tf.constant(np.random.default_rng(1).uniform(0, 255, (2, 48, 48, 3)).astype(np.float32))
    blurred = tf.nn.avg_pool2d(tf.pad(hr, [[0, 0], [1, 1], [1, 1], [0, 0]], "SYMMETRIC"), 3, 1, "VALID")
    noisy = hr + tf.random.stateless_normal(hr.shape, (0, 0), stddev=2.0)
    assert float(loss(hr, hr)) == pytest.approx(0.0, abs=1e-7)
    assert float(loss(hr, blurred)) > 20 * float(loss(hr, noisy)) > 0


def test_gan_step_with_the_generic_loss_and_a_pixel_term(tmp_path, make_config, random_vgg19):
    import tensorflow as tf

    from training.gan import GanStage
    from training.losses import pixel_loss, random_perceptual_loss

    config = make_config(tmp_path, tmp_path, stage="gan", **{
        "gan.d_filters": 4, "gan.perceptual": "random-vgg19", "gan.pixel_weight": 0.01})
    stage = GanStage(config, features=random_vgg19)
    stage.build()
    hr = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    sr = stage.generator(hr[:, ::4, ::4], training=True)
    expected = float(random_perceptual_loss(random_vgg19)(hr, sr) + 0.01 * pixel_loss("l1")(hr, sr))
    metrics = {k: float(v) for k, v in tf.function(stage.train_step)(hr[:, ::4, ::4], hr).items()}
    assert metrics["content"] == pytest.approx(expected, rel=1e-3)
    assert metrics["g_loss"] == pytest.approx(metrics["content"] + 1e-3 * metrics["adversarial"], rel=1e-4)


def test_gan_without_perceptual_uses_the_pixel_term_alone(tmp_path, make_config):
    import tensorflow as tf

    from training.gan import GanStage

    config = make_config(tmp_path, tmp_path, stage="gan", **{
        "gan.d_filters": 4, "gan.perceptual": "none", "gan.pixel_weight": 1.0})
    stage = GanStage(config)
    stage.build()
    hr = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    metrics = {k: float(v) for k, v in tf.function(stage.train_step)(hr[:, ::4, ::4], hr).items()}
    assert 0 < metrics["content"] < 1 and np.isfinite(metrics["g_loss"])


def test_a_loss_free_gan_config_is_refused(tmp_path, make_config):
    with pytest.raises(ValueError, match="needs a loss"):
        make_config(tmp_path, tmp_path, stage="gan", **{"gan.perceptual": "none", "gan.adv_weight": 0})


def test_an_explicit_vgg54_without_weights_fails_before_training(tmp_path, image_folder, make_config, monkeypatch):
    from training.losses import VggWeightsMissing
    from training.trainer import train

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr("training.losses.FALLBACK_CACHE", tmp_path / "fallback")
    config = make_config(tmp_path, image_folder, stage="gan", steps=2, **{
        "gan.pretrained": str(tmp_path / "missing.weights.h5"), "gan.perceptual": "vgg54"})
    with pytest.raises(VggWeightsMissing):
        train(config)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_gan_checkpoints_are_picked_by_niqe_within_the_psnr_floor(tmp_path, make_config):
    import math

    from training.trainer import selection_score
    from training.validate import Validation

    gan = make_config(tmp_path, tmp_path, stage="gan")
    pre = make_config(tmp_path, tmp_path)
    bicubic = Validation(28.0, 0.8)
    assert selection_score(Validation(29.0, 0.8, niqe=5.0), bicubic, pre) == 29.0
    assert selection_score(Validation(29.0, 0.8, niqe=5.0), bicubic, gan) == -5.0
    assert selection_score(Validation(27.6, 0.8, niqe=4.0), bicubic, gan) == -4.0
    assert selection_score(Validation(27.4, 0.8, niqe=3.0), bicubic, gan) == -math.inf, "0.6 dB under bicubic"


def test_a_flat_region_ceiling_leaves_out_checkpoints_that_invent_texture_where_the_image_is_flat(tmp_path,
                                                                                                  make_config):
    """``--max-flat-ratio``: NIQE rewards invented texture (crackle, a grid), the flat-region error shows it; a
    validation above the ceiling (a multiple of bicubic's flat-region error) is not picked, whatever its NIQE."""
    import math

    from training.trainer import selection_score
    from training.validate import Validation

    capped = make_config(tmp_path, tmp_path, stage="gan", **{"gan.max_flat_ratio": 1.12})
    free = make_config(tmp_path, tmp_path, stage="gan")
    bicubic = Validation(28.0, 0.8, flat_error=5.0)
    crackle = Validation(27.8, 0.8, niqe=4.0, flat_error=6.0)
    assert selection_score(crackle, bicubic, free) == -4.0
    assert selection_score(crackle, bicubic, capped) == -math.inf, "6.0 > 1.12 x 5.0"
    assert selection_score(Validation(27.8, 0.8, niqe=5.0, flat_error=5.5), bicubic, capped) == -5.0
    assert selection_score(Validation(27.8, 0.8, niqe=5.0), Validation(28.0, 0.8), capped) == -5.0, "not measured"


def test_a_redrawn_random_vgg19_matches_the_fixed_network_of_its_step_and_changes_with_the_step(random_vgg19):
    import tensorflow as tf

    from training.config import GanConfig
    from training.losses import random_perceptual_loss, redrawn_random_vgg19_loss

    step = tf.Variable(0, dtype=tf.int64)
    redrawn = redrawn_random_vgg19_loss(step, seed=0)
    hr = tf.constant(np.random.default_rng(1).uniform(0, 255, (2, 40, 40, 3)).astype(np.float32))
    sr = hr + tf.random.stateless_normal(hr.shape, (0, 1), stddev=8.0)
    first = float(redrawn(hr, sr))
    assert float(redrawn(hr, hr)) == pytest.approx(0.0, abs=1e-7)
    assert first == pytest.approx(float(redrawn(hr, sr)))  # the same step draws the same network
    fixed = float(random_perceptual_loss(random_vgg19)(hr, sr))
    assert first > 0 and abs(np.log(first / fixed)) < 0.5  # same initialisation scale: same order of magnitude
    step.assign(1)
    assert float(redrawn(hr, sr)) != pytest.approx(first, rel=1e-4)  # a new step draws a new network
    with pytest.raises(ValueError, match="block9_conv1"):
        redrawn_random_vgg19_loss(step, layers=["block9_conv1"])
    assert GanConfig().perceptual_redraw is False  # the fixed network stays the default


def test_the_lowfreq_term_ignores_texture_and_sees_colour():
    import tensorflow as tf

    from training.losses import lowfreq_loss

    loss = lowfreq_loss(4)
    hr = tf.constant(np.random.default_rng(2).uniform(40, 200, (1, 32, 32, 3)).astype(np.float32))
    checker = np.indices((32, 32)).sum(axis=0) % 2 * 2.0 - 1.0  # zero mean over every 4x4 block
    textured = hr + tf.constant((20.0 * checker)[None, :, :, None], tf.float32)
    shifted = hr + tf.constant([3.0, 0.0, 0.0])
    assert float(loss(hr, textured)) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(hr, shifted)) == pytest.approx(1.0 / 255.0, rel=1e-4)


def test_gan_step_with_redrawn_weights_and_the_lowfreq_term(tmp_path, make_config):
    import tensorflow as tf

    from training.gan import GanStage
    from training.losses import lowfreq_loss, redrawn_random_vgg19_loss

    config = make_config(tmp_path, tmp_path, stage="gan", **{
        "gan.d_filters": 4, "gan.perceptual": "random-vgg19", "gan.perceptual_redraw": True,
        "gan.perceptual_layers": ["block1_conv2", "block2_conv2"], "gan.lowfreq_weight": 2.0})
    stage = GanStage(config)
    stage.build()
    hr = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    sr = stage.generator(hr[:, ::4, ::4], training=True)
    step = tf.Variable(0, dtype=tf.int64)
    expected = float(
        redrawn_random_vgg19_loss(step, 0, ["block1_conv2", "block2_conv2"])(hr, sr) + 2.0 * lowfreq_loss(4)(hr, sr)
    )
    fn = tf.function(stage.train_step)
    metrics = {k: float(v) for k, v in fn(hr[:, ::4, ::4], hr).items()}
    assert metrics["content"] == pytest.approx(expected, rel=1e-3)
    assert int(stage.g_optimizer.iterations) == 1
    with pytest.raises(ValueError, match="random-vgg19 loss only"):
        make_config(tmp_path, tmp_path, stage="gan", **{"gan.perceptual": "none", "gan.perceptual_redraw": True,
                                                         "gan.pixel_weight": 1.0})


def test_gan_step_with_the_unet_discriminator(tmp_path, make_config):
    import tensorflow as tf

    from training.gan import GanStage

    config = make_config(tmp_path, tmp_path, stage="gan", **{
        "gan.discriminator": "unet", "gan.d_filters": 4, "gan.perceptual": "none", "gan.pixel_weight": 1.0,
        "gan.adv_weight": 0.1})
    stage = GanStage(config)
    stage.build()
    assert stage.discriminator.name == "unet_discriminator"
    hr = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    d_before = [v.numpy().copy() for v in stage.discriminator.trainable_variables]
    metrics = {k: float(v) for k, v in tf.function(stage.train_step)(hr[:, ::4, ::4], hr).items()}
    assert all(np.isfinite(v) for v in metrics.values())
    assert metrics["d_loss"] > 0
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(d_before, stage.discriminator.trainable_variables))


def test_validation_measures_the_flat_region_error_of_the_model_and_of_bicubic():
    """The flat-region error beside PSNR in every validation (history, picking): where the ground truth is flat,
    bicubic of a noisy LR keeps part of its noise, and a model that adds texture has more."""
    from training.arch import build_generator
    from training.sources import Example
    from training.validate import bicubic_baseline, validate

    rng = np.random.default_rng(0)
    hr = np.full((32, 32, 3), 120, np.uint8)
    lr = np.clip(120 + rng.normal(0, 8, (16, 16, 3)), 0, 255).astype(np.uint8)
    examples = [Example("flat.png", lr, hr)]
    bicubic = bicubic_baseline(examples, 2)
    assert bicubic.flat_error is not None and 1.0 < bicubic.flat_error < 8.0
    result = validate(build_generator(scale=2, filters=8, blocks=1), examples, 2)
    assert result.flat_error is not None and result.flat_error > 0
