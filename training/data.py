"""The ``tf.data`` pipeline: random aligned crops of cached (LR, HR) pairs.

Crop ``i`` of the run (batch ``i // batch_size``) is a pure function of the
run's seed and ``i``: the image is drawn (with probability proportional to
its area), cropped, flipped, rotated and JPEG-degraded with stateless random
ops seeded by ``(seed, i)``. A run resumed at step ``s`` starts the stream at
crop ``s * batch_size`` and sees what an uninterrupted run would have seen.

With ``degradation: realworld`` the LR crop is not read but made from the HR
crop by ``training.degradations`` (blur, resize, noise, JPEG; a
``tf.numpy_function`` seeded by the crop's seed), and the validation LR images
are degraded the same way with fixed seeds (one per image), so checkpoint
picking measures restoration.

Images are decoded once and kept in memory (plain folders always: their LR
is made once with the protocol's bicubic downscale), or, for a DIV2K folder
too large for memory, decoded from disk per crop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from training import augment
from training.config import DataConfig, DegradeConfig
from training.degradations import degrade_u8
from training.sources import (
    Example,
    Pair,
    centre_crop,
    combined_folder_pairs,
    decode_pair,
    decoded_bytes,
    div2k_pairs,
    is_div2k,
    split_holdout,
)

log = logging.getLogger(__name__)

_ENDLESS = 2**62


class MemoryStore:
    """Decoded pairs as two flat uint8 buffers with offsets and shapes."""

    def __init__(self, examples: list[Example]) -> None:
        self.count = len(examples)
        self._lr, self._lr_index = self._pack([e.lr for e in examples])
        self._hr, self._hr_index = self._pack([e.hr for e in examples])
        self.areas = np.array([e.lr.shape[0] * e.lr.shape[1] for e in examples], dtype=np.float64)

    @staticmethod
    def _pack(images: list[np.ndarray]) -> tuple[tf.Tensor, tf.Tensor]:
        sizes = np.array([im.size for im in images], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        shapes = np.array([im.shape for im in images], dtype=np.int64)
        flat = tf.constant(np.concatenate([im.ravel() for im in images]))
        return flat, tf.constant(np.concatenate([offsets[:, None], sizes[:, None], shapes], axis=1))

    @staticmethod
    def _get(flat: tf.Tensor, index: tf.Tensor, i: tf.Tensor) -> tf.Tensor:
        row = index[i]
        return tf.reshape(tf.slice(flat, [row[0]], [row[1]]), row[2:5])

    def fetch(self, i: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return self._get(self._lr, self._lr_index, i), self._get(self._hr, self._hr_index, i)


class FileStore:
    """Pairs decoded from disk at every crop (for DIV2K sets larger than memory)."""

    def __init__(self, pairs: list[Pair], sizes: list[tuple[int, int]], scale: int) -> None:
        self.count = len(pairs)
        self.scale = scale
        self._lr = tf.constant([str(p.lr_path) for p in pairs])
        self._hr = tf.constant([str(p.hr_path) for p in pairs])
        self.areas = np.array([w * h for w, h in sizes], dtype=np.float64)

    def fetch(self, i: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        lr = tf.io.decode_image(tf.io.read_file(self._lr[i]), channels=3, expand_animations=False)
        hr = tf.io.decode_image(tf.io.read_file(self._hr[i]), channels=3, expand_animations=False)
        shape = tf.shape(lr)
        hr = hr[: shape[0] * self.scale, : shape[1] * self.scale]
        return lr, hr


@dataclass
class TrainingData:
    """The training store, the validation examples and a one-line description."""

    store: MemoryStore | FileStore
    validation: list[Example]
    description: str


VALIDATION_SEED = 20260
"""Validation image ``i`` of a realworld run is degraded with seed (VALIDATION_SEED, i): the same in every run."""


def degrade_validation(examples: list[Example], scale: int, cfg: DegradeConfig) -> list[Example]:
    """The validation pairs with their LR made by the real-world degradation, one fixed seed per image."""
    return [Example(e.name, degrade_u8(e.hr, (VALIDATION_SEED, i), scale, cfg), e.hr) for i, e in enumerate(examples)]


def load_training_data(cfg: DataConfig, scale: int, degrade: DegradeConfig | None = None) -> TrainingData:
    """Read ``cfg.data`` (DIV2K or a plain folder), split off validation, cache what fits.

    ``degrade``: the real-world degradation's ranges, for a ``realworld`` run's validation LR images.
    """
    if cfg.data is None:
        raise ValueError("no training data: pass --data DIR")
    fmt = cfg.format
    if fmt == "auto":
        fmt = "div2k" if is_div2k(cfg.data) else "folder"
    lr_min = cfg.hr_size // scale
    if fmt == "div2k" and cfg.extra_data:
        raise ValueError("--extra-data adds plain folders to a plain folder, not to a DIV2K folder")
    if fmt == "div2k":
        pairs = div2k_pairs(cfg.data, "train", scale, cfg.div2k_track)
        try:
            val_pairs = div2k_pairs(cfg.data, "valid", scale, cfg.div2k_track)
        except FileNotFoundError:
            pairs, val_pairs = split_holdout(pairs, cfg.val_fraction)
    else:
        pairs, val_pairs = split_holdout(combined_folder_pairs(cfg.data, cfg.extra_data), cfg.val_fraction)
    validation = [centre_crop(decode_pair(p, scale), scale, cfg.val_max_side) for p in val_pairs[: cfg.val_images]]
    if cfg.degradation == "realworld":
        validation = degrade_validation(validation, scale, degrade or DegradeConfig())

    in_memory = fmt == "folder" or cfg.cache == "memory"
    if cfg.cache == "auto" and fmt == "div2k":
        in_memory = decoded_bytes(pairs, scale) <= cfg.cache_max_gb * 2**30
    if in_memory:
        examples = [decode_pair(p, scale) for p in pairs]
        kept_examples = [e for e in examples if min(e.lr.shape[:2]) >= lr_min]
        store: MemoryStore | FileStore = MemoryStore(kept_examples)
        n_kept = len(kept_examples)
    else:
        sizes = [_lr_size(p, scale) for p in pairs]
        keep = [i for i, (w, h) in enumerate(sizes) if min(w, h) >= lr_min]
        store = FileStore([pairs[i] for i in keep], [sizes[i] for i in keep], scale)
        n_kept = len(keep)
    if n_kept < len(pairs):
        log.warning("%d images smaller than the %d px HR crop were left out", len(pairs) - n_kept, cfg.hr_size)
    if not n_kept:
        raise ValueError(f"no training image in {cfg.data} is at least {cfg.hr_size} px a side")
    where = "memory" if in_memory else "disk"
    description = (f"{fmt} {cfg.data}: {n_kept} training images ({where}), {len(validation)} validation, "
                   f"{cfg.degradation} LR")
    return TrainingData(store, validation, description)


def _lr_size(pair: Pair, scale: int) -> tuple[int, int]:
    from PIL import Image

    with Image.open(pair.lr_path or pair.hr_path) as img:
        w, h = img.size
    return (w, h) if pair.lr_path else (w // scale, h // scale)


def make_dataset(
    store: MemoryStore | FileStore, cfg: DataConfig, scale: int, seed: int, start_step: int = 0,
    degrade: DegradeConfig | None = None,
) -> tf.data.Dataset:
    """Endless batches of (lr, hr) float32 0..255 crops, starting at batch ``start_step``.

    ``cfg.degradation == "realworld"``: the LR crop is the HR crop degraded by ``degrade`` (default ranges when None).
    """
    logits = tf.constant(np.log(store.areas / store.areas.sum())[None, :], dtype=tf.float32)
    realworld = cfg.degradation == "realworld"
    ranges = degrade or DegradeConfig()
    lr_size = cfg.hr_size // scale

    def make_lr(hr: tf.Tensor, i: tf.Tensor) -> tf.Tensor:
        lr = tf.numpy_function(lambda img, k: degrade_u8(img, (seed, int(k)), scale, ranges), [hr, i], tf.uint8,
                               stateful=False)
        return tf.ensure_shape(lr, (lr_size, lr_size, 3))

    def example(i: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        seeds = tf.random.experimental.stateless_split(tf.stack([tf.constant(seed, tf.int64), i]), 5)
        index = tf.random.stateless_categorical(logits, 1, seeds[0], dtype=tf.int32)[0, 0]
        lr, hr = store.fetch(index)
        lr, hr = augment.random_crop(lr, hr, cfg.hr_size, scale, seeds[1])
        if cfg.flip:
            lr, hr = augment.random_flip(lr, hr, seeds[2])
        if cfg.rotate:
            lr, hr = augment.random_rotate(lr, hr, seeds[3])
        if realworld:
            lr = make_lr(hr, i)
        elif cfg.jpeg_noise:
            lr = augment.jpeg_noise(lr, seeds[4], cfg.jpeg_quality, cfg.jpeg_prob)
        return tf.cast(lr, tf.float32), tf.cast(hr, tf.float32)

    ds = tf.data.Dataset.range(start_step * cfg.batch_size, _ENDLESS)
    ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(cfg.batch_size, drop_remainder=True).prefetch(2)
