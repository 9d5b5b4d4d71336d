"""Losses: pixel (pretraining), VGG54 content and adversarial (GAN stage), and the VGG19 loader."""

from __future__ import annotations

import os
from pathlib import Path

import keras
import tensorflow as tf

VGG19_NOTOP = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
FALLBACK_CACHE = Path("/tmp/.keras/models")
"""Where Keras caches downloads when its home folder is not writable."""


class VggWeightsMissing(FileNotFoundError):
    """The VGG19 ImageNet weights are neither in the Keras cache nor where ``--vgg-weights`` points."""


def pixel_loss(kind: str):
    """Mean squared (``mse``) or absolute (``l1``) error of images in 0..255, measured on a 0..1 scale."""

    def mse(hr, sr):
        return tf.reduce_mean(tf.square((hr - sr) / 255.0))

    def l1(hr, sr):
        return tf.reduce_mean(tf.abs((hr - sr) / 255.0))

    try:
        return {"mse": mse, "l1": l1}[kind]
    except KeyError:
        raise ValueError(f"loss must be mse or l1, got {kind!r}") from None


def keras_cache_file(name: str = VGG19_NOTOP) -> Path:
    """Where ``keras.applications`` keeps (and looks for) a downloaded weight file."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models" / name


def vgg19_weights_path(explicit: Path | None) -> Path:
    """The VGG19 notop weights to load: ``explicit``, else the Keras cache; never downloads."""
    candidates = [Path(explicit).expanduser()] if explicit else [keras_cache_file(), FALLBACK_CACHE / VGG19_NOTOP]
    for path in candidates:
        if path.is_file():
            return path
    where = f"at {candidates[0]}" if explicit else f"in the Keras cache ({candidates[0]})"
    raise VggWeightsMissing(
        f"VGG19 ImageNet weights not found {where}. The GAN stage's content loss needs "
        f"{VGG19_NOTOP} (from https://storage.googleapis.com/tensorflow/keras-applications/vgg19/). "
        f"Copy it to {keras_cache_file()} or pass --vgg-weights PATH."
    )


def build_feature_extractor(weights: Path | None, layer: str = "block5_conv4", random: bool = False) -> keras.Model:
    """VGG19 up to ``layer``, frozen; takes RGB 0..255. ``random=True`` (tests only) skips the weights."""
    path = None if random else vgg19_weights_path(weights)
    vgg = keras.applications.VGG19(weights=None, include_top=False, input_shape=(None, None, 3))
    if path is not None:
        vgg.load_weights(str(path))
    features = keras.Model(vgg.input, vgg.get_layer(layer).output, name=f"vgg19_{layer}")
    features.trainable = False
    return features


def content_loss(features: keras.Model, rescale: float = 12.75):
    """VGG54 loss: MSE of ``features`` of ``preprocess_input`` images, features divided by ``rescale``."""
    preprocess = keras.applications.vgg19.preprocess_input

    def loss(hr, sr):
        f_hr = tf.cast(features(preprocess(hr), training=False), tf.float32) / rescale
        f_sr = tf.cast(features(preprocess(sr), training=False), tf.float32) / rescale
        return tf.reduce_mean(tf.square(f_hr - f_sr))

    return loss


def generator_adversarial_loss(fake_prob):
    """Binary cross-entropy pushing the discriminator's output on generated images to 1."""
    return tf.reduce_mean(keras.losses.binary_crossentropy(tf.ones_like(fake_prob), fake_prob))


def discriminator_loss(real_prob, fake_prob):
    """Binary cross-entropy of real images labelled 1 and generated ones labelled 0."""
    real = keras.losses.binary_crossentropy(tf.ones_like(real_prob), real_prob)
    fake = keras.losses.binary_crossentropy(tf.zeros_like(fake_prob), fake_prob)
    return tf.reduce_mean(real) + tf.reduce_mean(fake)
