"""Augmentations: small pure functions of an (LR, HR) uint8 pair and a seed.

Every function is stateless (``tf.random.stateless_*`` with an explicit
``seed`` of shape (2,)), so a crop depends only on the run's seed and the
crop's index: a resumed run sees exactly the crops it would have seen.
"""

from __future__ import annotations

import tensorflow as tf


def random_crop(
    lr: tf.Tensor, hr: tf.Tensor, hr_size: int, scale: int, seed: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Aligned square crops: ``hr_size`` HR pixels at (scale*x, scale*y), ``hr_size/scale`` LR pixels at (x, y)."""
    lr_size = hr_size // scale
    shape = tf.shape(lr)
    seed_y, seed_x = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    y = tf.random.stateless_uniform((), seed_y, 0, shape[0] - lr_size + 1, dtype=tf.int32)
    x = tf.random.stateless_uniform((), seed_x, 0, shape[1] - lr_size + 1, dtype=tf.int32)
    lr_crop = tf.slice(lr, [y, x, 0], [lr_size, lr_size, 3])
    hr_crop = tf.slice(hr, [y * scale, x * scale, 0], [hr_size, hr_size, 3])
    return lr_crop, hr_crop


def random_flip(lr: tf.Tensor, hr: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Mirror both left-right with probability 0.5."""
    flip = tf.random.stateless_uniform((), seed) < 0.5
    return (
        tf.cond(flip, lambda: tf.reverse(lr, [1]), lambda: lr),
        tf.cond(flip, lambda: tf.reverse(hr, [1]), lambda: hr),
    )


def random_rotate(lr: tf.Tensor, hr: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Rotate both by the same random multiple of 90 degrees (square crops keep their shape)."""
    k = tf.random.stateless_uniform((), seed, 0, 4, dtype=tf.int32)
    return _rot90(lr, k), _rot90(hr, k)


def _rot90(img: tf.Tensor, k: tf.Tensor) -> tf.Tensor:
    """``tf.image.rot90`` of a uint8 image, turned as float32 (exact for 0..255): oneDNN has no uint8
    transpose on most CPUs and logs an ``E0000 ... DT_UINT8`` line in every run when asked for one."""
    return tf.cast(tf.image.rot90(tf.cast(img, tf.float32), k), img.dtype)


def jpeg_noise(lr: tf.Tensor, seed: tf.Tensor, quality: tuple[int, int] = (50, 95), prob: float = 0.5) -> tf.Tensor:
    """JPEG-compress the LR crop at a random quality in ``quality`` with probability ``prob``."""
    seed_p, seed_q = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    apply = tf.random.stateless_uniform((), seed_p) < prob
    lo, hi = quality

    def compress() -> tf.Tensor:
        q = tf.random.stateless_uniform((), seed_q, lo, hi + 1, dtype=tf.int32)
        out = tf.image.adjust_jpeg_quality(lr, q)
        return tf.ensure_shape(tf.image.convert_image_dtype(out, tf.uint8, saturate=True), lr.shape)

    return tf.cond(apply, compress, lambda: lr)
