"""A run directory, its checkpoints, and finding a generator's weights again.

Layout of ``run_dir``::

    config.json              the full TrainConfig of the run
    checkpoints/             tf.train.CheckpointManager: ckpt-<step>.{index,data-*}, checkpoint
    best.weights.h5          generator weights with the best validation PSNR so far
    best.json                step, PSNR and SSIM of best.weights.h5
    validation.jsonl         one line per validation: step, PSNR, SSIM, per-image PSNR
    logs/train, logs/val     TensorBoard scalars
    samples/step_<N>/        SR of the first validation images at step N (samples/reference: HR, bicubic)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from training.config import GeneratorConfig, TrainConfig


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best_weights(self) -> Path:
        return self.root / "best.weights.h5"

    @property
    def best_info(self) -> Path:
        return self.root / "best.json"

    @property
    def history(self) -> Path:
        return self.root / "validation.jsonl"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def samples(self) -> Path:
        return self.root / "samples"


class Checkpointer:
    """Step, best validation PSNR, networks and optimisers in one ``tf.train.Checkpoint``."""

    def __init__(self, run: RunDir, keep: int, **trackables: tf.Module | keras.Model | keras.Optimizer) -> None:
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.best_psnr = tf.Variable(-math.inf, dtype=tf.float64, trainable=False, name="best_psnr")
        self.checkpoint = tf.train.Checkpoint(step=self.step, best_psnr=self.best_psnr, **trackables)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(run.checkpoints), max_to_keep=keep)

    def restore_latest(self) -> str | None:
        """Restore the newest checkpoint; its path, or None when the run has none."""
        path = self.manager.latest_checkpoint
        if path is not None:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        return path

    def save(self) -> str:
        return self.manager.save(checkpoint_number=int(self.step.numpy()))


@dataclass(frozen=True)
class GeneratorSource:
    """Where a generator's weights are: a ``.weights.h5`` file or a checkpoint prefix, and its run's config."""

    weights: Path
    kind: str  # "weights" or "checkpoint"
    config: TrainConfig | None


def find_generator(path: Path) -> GeneratorSource:
    """Resolve a run directory, ``checkpoints/`` folder, checkpoint prefix or ``.weights.h5`` file.

    A run directory gives its ``best.weights.h5`` when there is one, else its
    latest checkpoint. The run's ``config.json`` is looked up beside the file
    or one folder up.
    """
    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file():
        run = RunDir(path)
        if run.best_weights.is_file():
            return GeneratorSource(run.best_weights, "weights", TrainConfig.load(run.config))
        path = run.checkpoints
    if path.is_dir():
        latest = tf.train.latest_checkpoint(str(path))
        if latest is None:
            raise FileNotFoundError(f"no checkpoint and no best.weights.h5 in {path}")
        return GeneratorSource(Path(latest), "checkpoint", _config_near(Path(latest)))
    if path.name.endswith(".weights.h5") and path.is_file():
        return GeneratorSource(path, "weights", _config_near(path))
    if Path(f"{path}.index").is_file():
        return GeneratorSource(path, "checkpoint", _config_near(path))
    raise FileNotFoundError(f"not a run directory, checkpoint or .weights.h5 file: {path}")


def _config_near(path: Path) -> TrainConfig | None:
    for folder in (path.parent, path.parent.parent):
        if (folder / "config.json").is_file():
            return TrainConfig.load(folder / "config.json")
    return None


def load_generator_weights(generator: keras.Model, source: GeneratorSource) -> None:
    """Load ``source`` into a generator built with the matching :class:`GeneratorConfig`."""
    if source.kind == "weights":
        generator.load_weights(str(source.weights))
    else:
        tf.train.Checkpoint(generator=generator).restore(
            str(source.weights)
        ).expect_partial().assert_existing_objects_matched()


def generator_config_of(source: GeneratorSource, fallback: GeneratorConfig | None = None) -> GeneratorConfig:
    """The architecture the source was trained with (its run's config; for a released ``NAME.resume.weights.h5``
    or ``NAME.weights.h5``, the ``architecture`` of ``NAME.card.json`` beside it), else ``fallback``."""
    if source.config is not None:
        return source.config.generator
    carded = card_architecture(source.weights)
    if carded is not None:
        return carded
    if fallback is None:
        raise FileNotFoundError(
            f"no config.json beside {source.weights}: pass the architecture (--arch, --scale, --filters, --blocks)"
        )
    return fallback


def card_architecture(weights: Path) -> GeneratorConfig | None:
    """The generator of the model card beside a released weights file (``srresnet_x4.resume.weights.h5``:
    ``srresnet_x4.card.json``); None without one. A card written before ``arch`` existed is an SRResNet's."""
    name = weights.name.removesuffix(".weights.h5").removesuffix(".resume")
    card = weights.with_name(f"{name}.card.json")
    if not card.is_file():
        return None
    arch = json.loads(card.read_text()).get("architecture") or {}
    fields = {k: v for k, v in arch.items() if k in GeneratorConfig.model_fields}
    return GeneratorConfig(**fields) if "scale" in fields else None


def write_json(path: Path, body: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
