"""The adversarial stage with a randomly initialised VGG19, and the missing-weights message."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.train


@pytest.fixture(scope="module")
def random_vgg():
    from training.losses import build_feature_extractor

    return build_feature_extractor(None, random=True)


def test_gan_step_runs_with_a_random_vgg(tmp_path, make_config, random_vgg):
    import tensorflow as tf

    from training.gan import GanStage

    config = make_config(tmp_path, tmp_path, stage="gan", **{"gan.d_filters": 4})
    stage = GanStage(config, features=random_vgg)
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
    tmp_path, image_folder, make_config, random_vgg
):
    import tensorflow as tf

    from training.arch import build_generator
    from training.trainer import train

    pretrained = build_generator(scale=4, filters=8, blocks=1)
    pretrained.save_weights(str(tmp_path / "pre.weights.h5"))
    config = make_config(
        tmp_path,
        image_folder,
        stage="gan",
        steps=2,
        **{"gan.pretrained": str(tmp_path / "pre.weights.h5"), "gan.d_filters": 4, "generator.blocks": 1},
    )
    result = train(config, features=random_vgg)
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
