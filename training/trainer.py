"""The training loop shared by both stages: data, checkpoints, validation, logs, resume.

:func:`train` runs a :class:`TrainConfig` to ``config.steps``. It checkpoints
every ``ckpt_every`` steps, at the end and when interrupted (Ctrl-C or
SIGTERM: the step in progress finishes first), so ``resume=True`` continues exactly where a run stopped: the
networks, both optimisers, the step, the best PSNR and the position in the
crop stream all come back.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from training.checkpoint import Checkpointer, RunDir, find_generator, write_json
from training.config import TrainConfig
from training.data import TrainingData, load_training_data, make_dataset
from training.gan import GanStage
from training.losses import resolve_perceptual
from training.optim import current_lr
from training.pretrain import PretrainStage
from training.stage import Stage
from training.validate import Validation, bicubic_baseline, save_references, save_samples, validate

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


class RunExists(FileExistsError):
    """The run directory already holds a run and ``resume`` was not asked for."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    best_psnr_y: float
    last: Validation | None
    interrupted: bool = False


def configure_tensorflow(config: TrainConfig) -> None:
    """Seeds, precision, op determinism and thread counts (the latter only before TensorFlow starts)."""
    keras.utils.set_random_seed(config.seed)
    precision = resolve_precision(config.precision)
    keras.mixed_precision.set_global_policy(precision)
    log.info("precision: %s%s", precision, " (auto)" if config.precision == "auto" else "")
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    if config.threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(config.threads)
            tf.config.threading.set_inter_op_parallelism_threads(min(2, config.threads))
        except RuntimeError:
            log.warning("TensorFlow already started: --threads %d ignored", config.threads)


def resolve_precision(precision: str) -> str:
    """``auto`` is ``mixed_bfloat16`` on a CPU-only machine whose CPU has bfloat16 instructions."""
    if precision != "auto":
        return precision
    if tf.config.list_physical_devices("GPU"):
        return "float32"
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return "float32"
    return "mixed_bfloat16" if {"avx512_bf16", "amx_bf16"} & set(flags) else "float32"


def adopt_pretrained_architecture(config: TrainConfig) -> TrainConfig:
    """For the gan stage, the generator shape of the pretrained run (when its config is known)."""
    if config.stage != "gan" or config.gan.pretrained is None:
        return config
    source = find_generator(config.gan.pretrained)
    if source.config is not None and source.config.generator != config.generator:
        log.info("generator architecture taken from the pretrained run: %s", source.config.generator)
        return config.model_copy(update={"generator": source.config.generator})
    return config


def _make_stage(config: TrainConfig, features: keras.Model | None) -> Stage:
    if config.stage == "pretrain":
        return PretrainStage(config)

    return GanStage(config, features=features)


class _StopRequest:
    """Set by SIGINT (Ctrl-C) or SIGTERM; the loop stops at the next step boundary and checkpoints.

    A second Ctrl-C interrupts at once (the default handler is back after the first).
    """

    def __init__(self) -> None:
        self.signal: int | None = None

    @contextmanager
    def installed(self) -> Iterator[_StopRequest]:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.signal = signum
            signal.signal(signal.SIGINT, signal.default_int_handler)

        try:
            previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        except ValueError:  # not the main thread: no signal handling
            yield self
            return
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


def train(
    config: TrainConfig, *, resume: bool = False, features: keras.Model | None = None, stop_at: int | None = None
) -> TrainResult:
    """Run (or continue, with ``resume``) the training described by ``config``.

    ``stop_at`` ends this call after that step with a checkpoint, as an
    interruption would (the schedule still runs to ``config.steps``).
    ``features`` replaces the feature network of the gan stage's content loss (tests).
    """
    try:
        return _train(config, resume, features, stop_at)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _train(config: TrainConfig, resume: bool, features: keras.Model | None, stop_at: int | None) -> TrainResult:
    run = RunDir(Path(config.run_dir))
    if run.config.exists() and not resume:
        raise RunExists(f"{run.root} already holds a run: pass --resume to continue it, or another --run-dir")
    if config.stage == "gan" and config.gan.perceptual == "auto":
        # resolved once and saved, so a resumed run (on any machine) keeps its loss; fails before loading data
        chosen = resolve_perceptual(config.gan, features)
        config = config.model_copy(update={"gan": config.gan.model_copy(update={"perceptual": chosen})})
        log.info("perceptual loss: %s (auto)", chosen)
    elif config.stage == "gan" and features is None:
        resolve_perceptual(config.gan)  # an explicit vgg54 without its weights fails here, before the data
    if not resume:
        config = adopt_pretrained_architecture(config)
    configure_tensorflow(config)
    scale = config.generator.scale
    data = load_training_data(config.data, scale, config.degrade)
    stage = _make_stage(config, features)
    ckpt = Checkpointer(run, config.keep, **stage.trackables())
    stage.build()
    restored = ckpt.restore_latest() if resume else None
    if restored is None:
        stage.initialize()
        if config.init_weights is not None:
            ckpt.step.assign(config.init_step)
            log.info("seeded from %s at step %d", config.init_weights, config.init_step)
    config.save(run.config)
    log.info("configuration:\n%s", config.to_json())
    log.info("data: %s", data.description)
    start = int(ckpt.step.numpy())
    log.info(
        "%s at step %d of %d in %s",
        f"resumed from {restored}," if restored else "starting",
        start,
        config.steps,
        run.root,
    )

    if not run.samples.joinpath("reference").exists() and config.samples:
        save_references(data.validation[: config.samples], scale, run.samples / "reference")
    baseline = bicubic_baseline(data.validation, scale)
    log.info("validation bicubic baseline: PSNR-Y %.3f dB, SSIM-Y %.4f%s", baseline.psnr_y, baseline.ssim_y,
             f", flat-region error {baseline.flat_error:.3f}" if baseline.flat_error is not None else "")

    step_fn = tf.function(stage.train_step, jit_compile=config.xla)
    batches = iter(make_dataset(data.store, config.data, scale, config.seed, start, config.degrade))
    train_writer = tf.summary.create_file_writer(str(run.logs / "train"))
    val_writer = tf.summary.create_file_writer(str(run.logs / "val"))
    step, last, interrupted = start, None, False
    sums: dict[str, float] = {}
    window_start, window_steps = time.perf_counter(), 0
    with _StopRequest().installed() as stop:
        try:
            end = config.steps if stop_at is None else min(stop_at, config.steps)
            while step < end and stop.signal is None:
                lr, hr = next(batches)
                metrics = step_fn(lr, hr)
                step += 1
                ckpt.step.assign(step)
                for key, value in metrics.items():
                    sums[key] = sums.get(key, 0.0) + float(value)
                window_steps += 1
                if step % config.log_every == 0 or step == config.steps:
                    rate = window_steps / max(time.perf_counter() - window_start, 1e-9)
                    means = {k: v / window_steps for k, v in sums.items()}
                    _log_progress(step, config.steps, means, rate, stage.optimizers(), train_writer)
                    sums, window_steps = {}, 0
                if step % config.val_every == 0 or step == config.steps:
                    last = _validate(stage.generator, data, step, ckpt, run, config, val_writer, baseline)
                if step % config.ckpt_every == 0 or step == end:
                    ckpt.save()
                if window_steps == 0:
                    window_start = time.perf_counter()
        except KeyboardInterrupt:
            stop.signal = signal.SIGINT
        if stop.signal is not None:
            interrupted = True
            log.info("stopped by %s at step %d: saving a checkpoint", signal.Signals(stop.signal).name, step)
            ckpt.save()
    train_writer.flush()
    val_writer.flush()
    best = float(ckpt.best_psnr.numpy())
    return TrainResult(run.root, step, best, last, interrupted or step < config.steps)


def _log_progress(
    step: int, total: int, means: dict[str, float], rate: float,
    optimizers: dict[str, keras.optimizers.Optimizer], writer: tf.summary.SummaryWriter,
) -> None:
    lrs = {name: current_lr(opt) for name, opt in optimizers.items()}
    eta = (total - step) / rate if rate > 0 else math.inf
    parts = "  ".join(f"{k} {v:.5f}" for k, v in means.items())
    rates = "  ".join(f"lr_{k} {v:.2e}" for k, v in lrs.items())
    log.info("step %d/%d  %s  %s  %.2f steps/s  eta %s", step, total, parts, rates, rate, _duration(eta))
    with writer.as_default(step=step):
        for key, value in means.items():
            tf.summary.scalar(f"loss/{key}", value)
        for key, value in lrs.items():
            tf.summary.scalar(f"lr/{key}", value)
        tf.summary.scalar("steps_per_second", rate)


def _validate(
    generator: keras.Model, data: TrainingData, step: int, ckpt: Checkpointer, run: RunDir, config: TrainConfig,
    writer: tf.summary.SummaryWriter, baseline: Validation,
) -> Validation:
    scale = config.generator.scale
    gan = config.stage == "gan"
    result = validate(generator, data.validation, scale, niqe=gan)
    score = selection_score(result, baseline, config)
    improved = score > float(ckpt.best_psnr.numpy())
    if improved:
        ckpt.best_psnr.assign(score)
        generator.save_weights(str(run.best_weights))
        info = {"step": step, "psnr_y": result.psnr_y, "ssim_y": result.ssim_y}
        if result.niqe is not None:
            info["niqe"] = result.niqe
        write_json(run.best_info, info)
    with run.history.open("a") as f:
        row = {
            "step": step,
            "psnr_y": result.psnr_y,
            "ssim_y": result.ssim_y,
            "bicubic_psnr_y": baseline.psnr_y,
            "bicubic_ssim_y": baseline.ssim_y,
            "per_image": result.per_image,
        }
        if result.flat_error is not None:
            row["flat_error"] = result.flat_error
        if baseline.flat_error is not None:
            row["bicubic_flat_error"] = baseline.flat_error
        if result.niqe is not None:
            row["niqe"] = result.niqe
            row["per_image_niqe"] = result.per_image_niqe
        f.write(json.dumps(row) + "\n")
    with writer.as_default(step=step):
        tf.summary.scalar("psnr_y", result.psnr_y)
        tf.summary.scalar("ssim_y", result.ssim_y)
        if result.niqe is not None:
            tf.summary.scalar("niqe", result.niqe)
        if result.flat_error is not None:
            tf.summary.scalar("flat_error", result.flat_error)
    if config.samples:
        save_samples(generator, data.validation[: config.samples], run.samples / f"step_{step:08d}")
    log.info(
        "validation step %d: PSNR-Y %.3f dB  SSIM-Y %.4f%s%s  (best %s%s)",
        step,
        result.psnr_y,
        result.ssim_y,
        f"  NIQE {result.niqe:.3f}" if result.niqe is not None else "",
        f"  flat {result.flat_error:.3f}" if result.flat_error is not None else "",
        best_text(float(ckpt.best_psnr.numpy()), gan),
        ", saved best.weights.h5" if improved else "",
    )
    return result


def best_text(score: float, gan: bool) -> str:
    """The best score so far as people read it: ``PSNR-Y 28.812`` (pretrain), ``NIQE 6.708`` (gan: the score is
    minus the NIQE, within the PSNR floor)."""
    if not gan:
        return f"PSNR-Y {score:.3f}"
    return f"NIQE {-score:.3f}" if math.isfinite(score) else "NIQE: none within the PSNR floor yet"


def selection_score(result: Validation, baseline: Validation, config: TrainConfig) -> float:
    """What checkpoint picking maximises: PSNR-Y (pretrain); minus NIQE within the PSNR floor and, when
    ``--max-flat-ratio`` is set, under the flat-region error ceiling (gan)."""
    if config.stage != "gan":
        return result.psnr_y
    if result.niqe is None or result.psnr_y < baseline.psnr_y - config.gan.max_psnr_drop:
        return -math.inf
    ratio = config.gan.max_flat_ratio
    if ratio is not None and result.flat_error is not None and baseline.flat_error is not None \
            and result.flat_error > ratio * baseline.flat_error:
        return -math.inf
    return -result.niqe


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"
