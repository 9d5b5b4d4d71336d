"""What a training stage is to the loop (``training.trainer``): the typed seam between the loop and
``PretrainStage`` (``training.pretrain``) or ``GanStage`` (``training.gan``), as ``model.backends.Backend`` is
between the engine and a runtime."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import keras
import tensorflow as tf


@runtime_checkable
class Stage(Protocol):
    """The networks, optimisers and one training step of a stage."""

    generator: keras.Model
    """The network that is validated, checkpointed as best and exported."""

    def trackables(self) -> dict[str, object]:
        """What the checkpoint holds besides the step and the best PSNR."""
        ...

    def build(self) -> None:
        """Create the optimisers' slots so a checkpoint can be restored into them."""
        ...

    def initialize(self) -> None:
        """A fresh run's start (initial weights); not called when a checkpoint is restored."""
        ...

    def optimizers(self) -> dict[str, keras.optimizers.Optimizer]:
        """The optimisers by short name (``g``, ``d``), for the learning-rate log."""
        ...

    def train_step(self, lr: tf.Tensor, hr: tf.Tensor) -> dict[str, tf.Tensor]:
        """One step on a batch of LR and HR images (0..255 NHWC); the losses to log."""
        ...
