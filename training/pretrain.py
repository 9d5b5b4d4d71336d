"""Pretraining stage: the generator with a pixel loss (MSE as in the paper, or L1), optionally an L1 of both images
average-pooled by the scale (``optim.pooled_weight``: keeps local colour means) and a distillation term: the same
pixel loss against a teacher generator's output on the LR crop (``optim.distill_from``, ``optim.distill_weight``)."""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import tensorflow as tf

from training.arch import build_generator, copy_matching_layers
from training.checkpoint import find_generator, generator_config_of, load_generator_weights
from training.config import TrainConfig
from training.losses import lowfreq_loss, pixel_loss
from training.optim import build_adam

log = logging.getLogger(__name__)


class PretrainStage:
    """The generator, its optimiser and one training step (a :class:`training.stage.Stage`)."""

    def __init__(self, config: TrainConfig) -> None:
        self.generator = build_generator(**config.generator.model_dump())
        self.g_optimizer = build_adam(config.optim, config.steps, name="g_adam", offset=config.init_step)
        self._loss = pixel_loss(config.optim.loss)
        self._pooled_weight = config.optim.pooled_weight
        self._pooled = lowfreq_loss(config.generator.scale)
        self._init_weights = config.init_weights
        self._scale = config.generator.scale
        self._init_from = (config.generator.model_copy(update={"scale": config.init_scale})
                           if config.init_scale and config.init_scale != config.generator.scale else None)
        distill = config.optim.distill_from
        self._teacher = build_teacher(distill, config.generator.scale) if distill is not None else None
        self._distill_weight = config.optim.distill_weight

    def trackables(self) -> dict[str, object]:
        """What the checkpoint holds besides the step and the best PSNR."""
        return {"generator": self.generator, "g_optimizer": self.g_optimizer}

    def build(self) -> None:
        """Create the optimiser's slots so a checkpoint can be restored into them."""
        self.g_optimizer.build(self.generator.trainable_variables)

    def initialize(self) -> None:
        """Fresh run: start from ``init_weights`` when given."""
        if self._init_weights is None:
            return
        if self._init_from is None:
            self.generator.load_weights(str(self._init_weights))
            return
        source = build_generator(**self._init_from.model_dump())
        source.load_weights(str(self._init_weights))
        fresh = copy_matching_layers(source, self.generator)
        log.info("%s: x%d weights copied into the x%d generator by layer name; fresh: %s", self._init_weights,
                 self._init_from.scale, self._scale, ", ".join(fresh) or "none")

    def optimizers(self) -> dict[str, keras.optimizers.Optimizer]:
        return {"g": self.g_optimizer}

    def train_step(self, lr: tf.Tensor, hr: tf.Tensor) -> dict[str, tf.Tensor]:
        target = self._teacher(lr, training=False) if self._teacher is not None else None
        with tf.GradientTape() as tape:
            sr = self.generator(lr, training=True)
            loss = self._loss(hr, sr)
            if self._pooled_weight:
                loss += self._pooled_weight * self._pooled(hr, sr)
            if target is not None:
                distill = self._loss(target, sr)
                loss += self._distill_weight * distill
        variables = self.generator.trainable_variables
        self.g_optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return {"loss": loss} if target is None else {"loss": loss, "distill": distill}


def build_teacher(path: Path, scale: int) -> keras.Model:
    """The frozen generator at ``path`` (run directory, checkpoint or ``.weights.h5``; the architecture from its
    run's ``config.json`` or the card beside a released file), checked to upscale by ``scale``."""
    source = find_generator(Path(path))
    arch = generator_config_of(source)
    if arch.scale != scale:
        raise ValueError(f"the teacher {source.weights} upscales x{arch.scale}, the generator x{scale}")
    teacher = build_generator(**arch.model_dump())
    load_generator_weights(teacher, source)
    teacher.trainable = False
    log.info("distillation teacher: %s (%s x%d, %d filters, %d blocks)", source.weights, arch.arch, arch.scale,
             arch.filters, arch.blocks)
    return teacher
