"""Losses: pixel (pretraining); perceptual content and adversarial (GAN stage); the feature networks.

Two perceptual (content) losses:

- ``vgg54``: the SRGAN paper's loss, MSE of VGG19 ImageNet features at
  ``block5_conv4`` divided by 12.75. Needs the ImageNet weights (Keras cache
  or ``--vgg-weights``); never downloads.
- ``random-vgg19``: the *generic perceptual loss* of Liu, Chen, Chen, Yin and
  Shen (CVPR 2021, arXiv 2103.10571): the same VGG19 structure with random,
  untrained weights (a fixed seed), compared at several depths. The paper's
  finding is that the multi-level structure of a deep network, not its
  trained weights, is what makes a perceptual loss work. Needs no download.
  Our setup (docs/training.md): the pre-activation outputs of the last
  convolution of each of the five blocks (``block1_conv2``, ``block2_conv2``,
  ``block3_conv4``, ``block4_conv4``, ``block5_conv4``), He-normal weights
  with fan-out (torchvision's VGG initialisation) and zero biases, input
  scaled to 0..1 and normalised with the ImageNet mean and std; each layer's
  squared error is divided by the mean squared feature of the target at that
  layer (so every depth weighs the same, whatever the random scale), and the
  layers are averaged.

  With ``perceptual_redraw`` the weights are drawn anew at every step
  (stateless, from the seed and the step, so a resumed run draws the same
  ones): the loss is then an expectation over random networks, and the
  generator cannot fit the blind spots of one fixed network. A fixed one
  left faint stripes and grids in our A/B runs (docs/training.md).

A third, optional term, ``lowfreq_weight``: L1 between the output and the HR
image, both average-pooled by the scale factor. It pins colour and the low
frequencies (what the LR input determines) without penalising texture.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import keras
import tensorflow as tf

from training.config import RANDOM_VGG19_LAYERS as _LAYERS
from training.config import GanConfig

log = logging.getLogger(__name__)

Loss = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
"""``loss(hr, sr)``: a scalar from a batch of ground truth and a batch of outputs."""

VGG19_NOTOP = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
FALLBACK_CACHE = Path("/tmp/.keras/models")
"""Where Keras caches downloads when its home folder is not writable."""


class VggWeightsMissing(FileNotFoundError):
    """The VGG19 ImageNet weights are neither in the Keras cache nor where ``--vgg-weights`` points."""


def pixel_loss(kind: str) -> Loss:
    """Mean squared (``mse``) or absolute (``l1``) error of images in 0..255, measured on a 0..1 scale."""

    def mse(hr: tf.Tensor, sr: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(tf.square((hr - sr) / 255.0))

    def l1(hr: tf.Tensor, sr: tf.Tensor) -> tf.Tensor:
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


RANDOM_VGG19_LAYERS = tuple(_LAYERS)
_VGG19_BLOCKS = (2, 2, 4, 4, 4)
_VGG19_WIDTHS = (64, 128, 256, 512, 512)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _vgg19_layers(layers: tuple[str, ...] | list[str]) -> tuple[list[str], int]:
    """The asked VGG19 layers and the index of the deepest (the network stops there); unknown ones refused."""
    wanted = list(layers)
    known = [f"block{b + 1}_conv{i + 1}" for b, n in enumerate(_VGG19_BLOCKS) for i in range(n)]
    unknown = [name for name in wanted if name not in known]
    if unknown or not wanted:
        raise ValueError(f"unknown VGG19 layers {unknown or wanted}: choose from {known}")
    return wanted, max(known.index(name) for name in wanted)


def build_random_vgg19(seed: int = 0, layers: tuple[str, ...] | list[str] = RANDOM_VGG19_LAYERS) -> keras.Model:
    """VGG19's convolutional structure with seeded random weights, frozen; outputs the pre-activation ``layers``.

    Takes RGB 0..255. Weights: He normal, fan-out (torchvision's VGG
    initialisation), zero biases; the same ``seed`` gives the same network on
    every machine (a stateless initializer per layer).
    """
    wanted, last = _vgg19_layers(layers)
    inp = keras.Input((None, None, 3), name="rgb")
    mean = tf.constant([255.0 * m for m in _IMAGENET_MEAN])
    std = tf.constant([255.0 * s for s in _IMAGENET_STD])
    x = keras.layers.Lambda(
        lambda t: (t - tf.cast(mean, t.dtype)) / tf.cast(std, t.dtype), output_shape=lambda shape: shape,
        name="normalise",
    )(inp)
    outputs: dict[str, tf.Tensor] = {}
    index, done = 0, False
    for b, (convs, width) in enumerate(zip(_VGG19_BLOCKS, _VGG19_WIDTHS)):
        for i in range(convs):
            name = f"block{b + 1}_conv{i + 1}"
            init = keras.initializers.VarianceScaling(2.0, "fan_out", "truncated_normal", seed=seed * 1000 + index)
            x = keras.layers.Conv2D(width, 3, padding="same", kernel_initializer=init, name=name)(x)
            if name in wanted:
                outputs[name] = x
            done = index == last
            if done:
                break
            x = keras.layers.ReLU(name=f"{name}_relu")(x)
            index += 1
        if done:
            break
        x = keras.layers.MaxPooling2D(2, name=f"block{b + 1}_pool")(x)
    model = keras.Model(inp, [outputs[name] for name in wanted], name=f"random_vgg19_seed{seed}")
    model.trainable = False
    return model


def random_perceptual_loss(features: keras.Model) -> Loss:
    """Generic perceptual loss: per-layer squared error relative to the target's feature energy, averaged."""

    def loss(hr: tf.Tensor, sr: tf.Tensor) -> tf.Tensor:
        both = features(tf.concat([hr, sr], axis=0), training=False)
        return _relative_feature_error(both if isinstance(both, (list, tuple)) else [both])

    return loss


def _relative_feature_error(features: list[tf.Tensor] | tuple[tf.Tensor, ...]) -> tf.Tensor:
    """Mean over layers of each layer's squared error divided by the target's feature energy there.

    Each tensor holds the HR batch then the SR batch (concatenated on the batch axis).
    """
    terms = []
    for f in features:
        f_hr, f_sr = tf.split(tf.cast(f, tf.float32), 2, axis=0)
        energy = tf.stop_gradient(tf.reduce_mean(tf.square(f_hr))) + 1e-6
        terms.append(tf.reduce_mean(tf.square(f_sr - f_hr)) / energy)
    return tf.add_n(terms) / len(terms)


def _he_fan_out_stddev(width: int) -> float:
    """Keras' VarianceScaling(2, fan_out, truncated_normal) stddev for a 3x3 convolution of ``width`` outputs."""
    return (2.0 / (9 * width)) ** 0.5 / 0.87962566103423978


def redrawn_random_vgg19_loss(
    step: tf.Variable, seed: int = 0, layers: tuple[str, ...] | list[str] = RANDOM_VGG19_LAYERS
) -> Loss:
    """Generic perceptual loss through a VGG19 whose random weights are drawn anew at every ``step``.

    The weights of step ``t`` come from ``stateless_truncated_normal`` with the
    seed ``(seed * 1000 + layer index, t)``: the same run draws the same
    networks after a resume, on any machine. Same initialisation, layers and
    per-layer normalisation as :func:`build_random_vgg19` with
    :func:`random_perceptual_loss`.
    """
    wanted, last = _vgg19_layers(layers)
    mean = tf.constant([255.0 * m for m in _IMAGENET_MEAN])
    std = tf.constant([255.0 * s for s in _IMAGENET_STD])

    def features(images: tf.Tensor) -> list[tf.Tensor]:
        dtype = keras.mixed_precision.global_policy().compute_dtype
        x = tf.cast((images - mean) / std, dtype)
        t = tf.cast(step, tf.int32)
        out, index, channels = [], 0, 3
        for b, (convs, width) in enumerate(zip(_VGG19_BLOCKS, _VGG19_WIDTHS)):
            for i in range(convs):
                kernel = tf.random.stateless_truncated_normal(
                    (3, 3, channels, width), seed=tf.stack([seed * 1000 + index, t]), stddev=_he_fan_out_stddev(width)
                )
                x = tf.nn.conv2d(x, tf.cast(kernel, dtype), 1, "SAME")
                channels = width
                if f"block{b + 1}_conv{i + 1}" in wanted:
                    out.append(x)
                if index == last:
                    return out
                x = tf.nn.relu(x)
                index += 1
            x = tf.nn.max_pool2d(x, 2, 2, "VALID")
        return out

    def loss(hr: tf.Tensor, sr: tf.Tensor) -> tf.Tensor:
        return _relative_feature_error(features(tf.concat([hr, sr], axis=0)))

    return loss


def lowfreq_loss(scale: int) -> Loss:
    """L1 (0..1 scale) between both images average-pooled by ``scale``: colour and low frequencies only."""

    def loss(hr: tf.Tensor, sr: tf.Tensor) -> tf.Tensor:
        pool = lambda t: tf.nn.avg_pool2d(tf.cast(t, tf.float32) / 255.0, scale, scale, "VALID")  # noqa: E731
        return tf.reduce_mean(tf.abs(pool(hr) - pool(sr)))

    return loss


def content_loss(features: keras.Model, rescale: float = 12.75) -> Loss:
    """VGG54 loss: MSE of ``features`` of ``preprocess_input`` images, features divided by ``rescale``."""
    preprocess = keras.applications.vgg19.preprocess_input

    def loss(hr: tf.Tensor, sr: tf.Tensor) -> tf.Tensor:
        f_hr = tf.cast(features(preprocess(hr), training=False), tf.float32) / rescale
        f_sr = tf.cast(features(preprocess(sr), training=False), tf.float32) / rescale
        return tf.reduce_mean(tf.square(f_hr - f_sr))

    return loss


def resolve_perceptual(gan: GanConfig, features: keras.Model | None = None) -> str:
    """``auto`` made concrete: ``vgg54`` when the ImageNet weights are found, else ``random-vgg19``.

    A given ``features`` network stands for the VGG19 of ``vgg54`` (tests). An
    explicit ``vgg54`` without the weights raises :class:`VggWeightsMissing`.
    """
    if features is not None and gan.perceptual in ("auto", "vgg54"):
        return "vgg54"
    if gan.perceptual == "vgg54":
        vgg19_weights_path(gan.vgg_weights)
        return "vgg54"
    if gan.perceptual != "auto":
        return gan.perceptual
    try:
        vgg19_weights_path(gan.vgg_weights)
        return "vgg54"
    except VggWeightsMissing as exc:
        log.warning("%s Using the generic perceptual loss (random-vgg19) instead.", exc)
        return "random-vgg19"


def build_content_loss(
    gan: GanConfig, features: keras.Model | None = None, scale: int = 4, step: tf.Variable | None = None
) -> Loss | None:
    """The content loss of ``gan.perceptual`` plus the weighted pixel and low-frequency terms; None when all are off.

    ``features`` replaces the feature network (tests); ``step`` (the
    generator optimiser's iteration counter) seeds ``perceptual_redraw``.
    """
    terms = []
    kind = resolve_perceptual(gan, features) if gan.perceptual == "auto" else gan.perceptual
    if kind == "vgg54":
        net = features or build_feature_extractor(gan.vgg_weights, gan.vgg_layer)
        terms.append((gan.perceptual_weight, content_loss(net, gan.vgg_rescale)))
    elif kind == "random-vgg19" and gan.perceptual_redraw and features is None:
        if step is None:
            raise ValueError("perceptual_redraw needs the training step")
        redrawn = redrawn_random_vgg19_loss(step, gan.perceptual_seed, gan.perceptual_layers)
        terms.append((gan.perceptual_weight, redrawn))
    elif kind == "random-vgg19":
        net = features or build_random_vgg19(gan.perceptual_seed, gan.perceptual_layers)
        terms.append((gan.perceptual_weight, random_perceptual_loss(net)))
    if gan.pixel_weight > 0:
        terms.append((gan.pixel_weight, pixel_loss(gan.pixel_loss)))
    if gan.lowfreq_weight > 0:
        terms.append((gan.lowfreq_weight, lowfreq_loss(scale)))
    if not terms:
        return None

    def loss(hr: tf.Tensor, sr: tf.Tensor) -> tf.Tensor:
        return tf.add_n([w * fn(hr, sr) for w, fn in terms])

    return loss


def generator_adversarial_loss(fake_prob: tf.Tensor) -> tf.Tensor:
    """Binary cross-entropy pushing the discriminator's output on generated images to 1."""
    return tf.reduce_mean(keras.losses.binary_crossentropy(tf.ones_like(fake_prob), fake_prob))


def discriminator_loss(real_prob: tf.Tensor, fake_prob: tf.Tensor) -> tf.Tensor:
    """Binary cross-entropy of real images labelled 1 and generated ones labelled 0."""
    real = keras.losses.binary_crossentropy(tf.ones_like(real_prob), real_prob)
    fake = keras.losses.binary_crossentropy(tf.zeros_like(fake_prob), fake_prob)
    return tf.reduce_mean(real) + tf.reduce_mean(fake)
