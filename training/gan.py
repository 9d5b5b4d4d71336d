"""Adversarial stage: SRGAN from a pretrained generator, a perceptual content loss plus adversarial loss."""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import tensorflow as tf

from training.arch import build_discriminator, build_generator, build_unet_discriminator
from training.checkpoint import find_generator, load_generator_weights
from training.config import TrainConfig
from training.losses import build_content_loss, discriminator_loss, generator_adversarial_loss
from training.optim import build_adam

log = logging.getLogger(__name__)


class GanPair(keras.Model):
    """Generator and discriminator together, so that one ``.weights.h5`` file holds both (resume weights)."""

    def __init__(self, generator: keras.Model, discriminator: keras.Model) -> None:
        super().__init__(name="srgan_pair")
        self.generator = generator
        self.discriminator = discriminator
        self.built = True  # both parts are built networks; the pair itself has no weights of its own

    def call(self, inputs: tf.Tensor) -> tf.Tensor:  # pragma: no cover - never called; the pair only carries weights
        return self.generator(inputs)


def save_pair(generator: keras.Model, discriminator: keras.Model, path: Path) -> None:
    """Both networks' weights in one ``.weights.h5`` file (what a GAN release ships to resume from)."""
    GanPair(generator, discriminator).save_weights(str(path))


def load_pair(generator: keras.Model, discriminator: keras.Model, path: Path) -> None:
    """Load a :func:`save_pair` file into networks of the same shapes."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no GAN resume weights at {path}")
    GanPair(generator, discriminator).load_weights(str(path))



def discriminator_for(config: TrainConfig) -> keras.Model:
    """The discriminator a gan run's config names (``--discriminator``, ``--d-filters``): the trainer builds it,
    and ``srgan release`` builds the same one to read the run's checkpoint."""
    gan = config.gan
    if gan.discriminator == "unet":
        return build_unet_discriminator(gan.d_filters)
    return build_discriminator(config.data.hr_size, gan.d_filters, config.generator.bn_momentum)

class GanStage:
    """Generator, discriminator, VGG19 features, both optimisers and one training step (a ``training.stage.Stage``).

    Args:
        config: the run; ``config.gan.pretrained`` names the starting generator.
        features: a prebuilt feature network for the content loss (tests);
            default: the one ``config.gan.perceptual`` names (resolved, not ``auto``).
    """

    def __init__(self, config: TrainConfig, features: keras.Model | None = None) -> None:
        self.config = config
        gen, gan = config.generator, config.gan
        self.generator = build_generator(**gen.model_dump())
        self.discriminator = discriminator_for(config)
        self.g_optimizer = build_adam(config.optim, config.steps, name="g_adam")
        self._content = build_content_loss(gan, features, gen.scale, self.g_optimizer.iterations)
        self.d_optimizer = build_adam(config.optim, config.steps, peak=gan.d_lr, name="d_adam")

    def trackables(self) -> dict[str, object]:
        return {
            "generator": self.generator,
            "discriminator": self.discriminator,
            "g_optimizer": self.g_optimizer,
            "d_optimizer": self.d_optimizer,
        }

    def build(self) -> None:
        self.g_optimizer.build(self.generator.trainable_variables)
        self.d_optimizer.build(self.discriminator.trainable_variables)

    def initialize(self) -> None:
        """Fresh run: the generator and discriminator of ``init_weights`` (a released GAN's resume file,
        to continue it on a new machine), else the pretrained generator and a new discriminator."""
        if self.config.init_weights is not None:
            load_pair(self.generator, self.discriminator, Path(self.config.init_weights))
            log.info("generator and discriminator initialised from %s", self.config.init_weights)
            return
        if self.config.gan.pretrained is None:
            raise ValueError("the gan stage starts from a pretrained generator: pass --pretrained RUN_DIR|WEIGHTS")
        source = find_generator(self.config.gan.pretrained)
        load_generator_weights(self.generator, source)
        log.info("generator initialised from %s", source.weights)

    def optimizers(self) -> dict[str, keras.optimizers.Optimizer]:
        return {"g": self.g_optimizer, "d": self.d_optimizer}

    def train_step(self, lr: tf.Tensor, hr: tf.Tensor) -> dict[str, tf.Tensor]:
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            sr = self.generator(lr, training=True)
            real = self.discriminator(hr, training=True)
            fake = self.discriminator(sr, training=True)
            content = self._content(hr, sr) if self._content is not None else tf.constant(0.0)
            adversarial = generator_adversarial_loss(fake)
            g_loss = content + self.config.gan.adv_weight * adversarial
            d_loss = discriminator_loss(real, fake)
        g_vars = self.generator.trainable_variables
        d_vars = self.discriminator.trainable_variables
        self.g_optimizer.apply_gradients(zip(g_tape.gradient(g_loss, g_vars), g_vars))
        self.d_optimizer.apply_gradients(zip(d_tape.gradient(d_loss, d_vars), d_vars))
        return {"g_loss": g_loss, "content": content, "adversarial": adversarial, "d_loss": d_loss}
