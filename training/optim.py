"""Optimisers and learning-rate schedules built from :class:`training.config.OptimConfig`."""

from __future__ import annotations

import keras

from training.config import OptimConfig


def build_schedule(cfg: OptimConfig, total_steps: int, peak: float | None = None):
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


def build_adam(
    cfg: OptimConfig, total_steps: int, peak: float | None = None, name: str = "adam"
) -> keras.optimizers.Adam:
    """Adam with the configured schedule, betas and clipping."""
    return keras.optimizers.Adam(
        learning_rate=build_schedule(cfg, total_steps, peak),
        beta_1=cfg.beta_1,
        beta_2=cfg.beta_2,
        clipnorm=cfg.clipnorm,
        name=name,
    )


def current_lr(optimizer: keras.optimizers.Optimizer) -> float:
    """The rate the optimiser applies at its next step."""
    lr = optimizer.learning_rate
    return float(lr.numpy() if hasattr(lr, "numpy") else lr)
