"""Optimisers and learning-rate schedules built from :class:`training.config.OptimConfig`."""

from __future__ import annotations

import keras
import tensorflow as tf

from training.config import OptimConfig


def build_schedule(
    cfg: OptimConfig, total_steps: int, peak: float | None = None,
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate as a function of the optimiser's step.

    ``constant``: ``lr``. ``piecewise``: ``lr``, multiplied by ``decay`` at each
    of ``boundaries`` (the tutorial: 1e-4, then 1e-5 after 100000 steps).
    ``cosine``: linear warm-up from ``lr / 100`` over ``warmup_steps``, then a
    cosine decay to ``lr * min_lr_ratio`` at ``total_steps``.
    """
    lr = cfg.lr if peak is None else peak
    if cfg.schedule == "constant":
        return lr
    if cfg.schedule == "piecewise":
        boundaries = sorted(cfg.boundaries)
        values = [lr * cfg.decay**k for k in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(lr, max(total_steps, 1), alpha=cfg.min_lr_ratio)
    return keras.optimizers.schedules.CosineDecay(
        lr / 100.0,
        max(total_steps - warmup, 1),
        alpha=cfg.min_lr_ratio,
        warmup_target=lr,
        warmup_steps=warmup,
    )


class ContinuedSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """``inner`` read ``offset`` steps later, with a fresh linear warm-up.

    For a run seeded from bare generator weights saved at step ``offset``: the
    optimiser counts from 0 again (its moments are new), the rate continues
    where the original schedule was, and the warm-up lets Adam's moments
    settle before the full rate applies.
    """

    def __init__(
        self, inner: float | keras.optimizers.schedules.LearningRateSchedule, offset: int, warmup: int,
    ) -> None:
        self.inner, self.offset, self.warmup = inner, offset, warmup

    def __call__(self, step: tf.Tensor) -> tf.Tensor:
        step = tf.cast(step, tf.float32)
        rate = self.inner(step + self.offset) if callable(self.inner) else tf.constant(self.inner, tf.float32)
        ramp = tf.minimum(1.0, (step + 1.0) / float(max(self.warmup, 1)))
        return tf.cast(rate, tf.float32) * ramp

    def get_config(self) -> dict:
        return {"offset": self.offset, "warmup": self.warmup}


def build_adam(
    cfg: OptimConfig, total_steps: int, peak: float | None = None, name: str = "adam", offset: int = 0
) -> keras.optimizers.Adam:
    """Adam with the configured schedule, betas and clipping.

    ``offset``: the run was seeded from weights saved at that step (see
    :class:`ContinuedSchedule`).
    """
    schedule = build_schedule(cfg, total_steps, peak)
    if offset:
        schedule = ContinuedSchedule(schedule, offset, cfg.warmup_steps)
    return keras.optimizers.Adam(
        learning_rate=schedule,
        beta_1=cfg.beta_1,
        beta_2=cfg.beta_2,
        clipnorm=cfg.clipnorm,
        name=name,
    )


def current_lr(optimizer: keras.optimizers.Optimizer) -> float:
    """The rate the optimiser applies at its next step."""
    lr = optimizer.learning_rate
    return float(lr.numpy() if hasattr(lr, "numpy") else lr)
