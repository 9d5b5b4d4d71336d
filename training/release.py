"""Ship a run as a packaged model: ONNX + model card in ``model/weights/``, plus the weights training resumes from.

    srgan release runs/srresnet_x4 --name srresnet_x4 \
        --bench ../shared/data/bench/Set5 ../shared/data/bench/Set14

1. exports the run's best generator (picked on the validation split of the
   training folder) with the parity and engine checks of ``srgan export``;
2. measures every ``--bench`` folder with the quality protocol (``srgan eval``)
   and stores the results, with the bicubic baseline and the per-image
   numbers, in the ONNX metadata and the card;
3. saves the generator of the run's *latest* checkpoint as
   ``<name>.resume.weights.h5`` with its step in the card, so that a new
   machine continues the run: ``srgan train pretrain --init-weights FILE
   --init-step STEP ...`` (the exact command is written into the card).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import onnx
import tensorflow as tf

from core.catalog.registry import card_path_for, sha256_of
from model.contract import ModelContract
from training.arch import build_generator
from training.config import TrainConfig, default_config
from training.evaluate import evaluate_model
from training.export import export_generator
from training.gan import discriminator_for, save_pair
from training.runpack import run_log_lines

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "model" / "weights"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_MEANS = ("mean_psnr_y", "mean_ssim_y", "bicubic_mean_psnr_y", "bicubic_mean_ssim_y", "mean_niqe",
          "bicubic_mean_niqe", "hr_mean_niqe", "max_color_shift")


def _bench_metrics(
    model: Path, folders: list[Path], compare: list[Path] | None = None
) -> tuple[dict[str, float], dict[str, Any]]:
    """Means (``set5_psnr_y``, ``set14_niqe``...) and per-image results; ``compare`` models measured beside, at
    this model's scale (one of another scale as a job asking this scale gets it: its output resized)."""
    metrics: dict[str, float] = {}
    details: dict[str, Any] = {}
    for folder in folders:
        report = evaluate_model(model, folder)
        tag = folder.name.lower()
        for key in _MEANS:
            if key in report:
                metrics[f"{tag}_{key.replace('mean_', '')}"] = round(float(report[key]), 4)
        images = report["images"]
        details[folder.name] = {
            "images": len(images),
            "beats_bicubic_on_every_image": all(i["psnr_y"] > i["bicubic_psnr_y"] for i in images),
            "per_image": images,
        }
        for other in compare or []:
            theirs = evaluate_model(other, folder, scale=report["scale"])  # another scale: resized as a job's
            details[folder.name].setdefault("compare", {})[other.stem] = {
                **{k: round(float(theirs[k]), 4) for k in _MEANS if k in theirs},
                **({"resample": theirs["resample"]} if "resample" in theirs else {}),
                "per_image": [{k: i[k] for k in ("name", "psnr_y", "ssim_y", "niqe", "color_shift") if k in i}
                              for i in theirs["images"]],
            }
    return metrics, details


def _save_resume_weights(run_dir: Path, dest: Path) -> int:
    """The latest checkpoint's networks as one ``.weights.h5`` file; returns its step.

    A pretraining run saves its generator; a gan run its generator and
    discriminator together (``training.gan.save_pair``).
    """
    config = TrainConfig.load(run_dir / "config.json")
    latest = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    if latest is None:
        raise SystemExit(f"no checkpoint in {run_dir / 'checkpoints'}")
    generator = build_generator(**config.generator.model_dump())
    step = tf.Variable(0, dtype=tf.int64)
    if config.stage == "gan":
        discriminator = discriminator_for(config)
        tf.train.Checkpoint(generator=generator, discriminator=discriminator, step=step).restore(
            latest).expect_partial()
        save_pair(generator, discriminator, dest)
    else:
        tf.train.Checkpoint(generator=generator, step=step).restore(latest).expect_partial()
        generator.save_weights(str(dest))
    return int(step.numpy())


def resume_command(config: TrainConfig, name: str, resume_file: str, step: int) -> str:
    """The ``srgan train`` command that continues ``config``'s run on a new machine from the shipped file."""
    flags = _changed_flags(config.model_dump(mode="json"), default_config(config.stage).model_dump(mode="json"))
    return " ".join([f"srgan train {config.stage}", f"--run-dir runs/{name}", *flags,
                     f"--init-weights model/weights/{resume_file}", f"--init-step {step}", "--resume"])


_NOT_CARRIED = {"run_dir", "init_weights", "init_step", "init_scale", "stage", "pretrained", "vgg_weights"}


def _changed_flags(body: dict[str, Any], defaults: dict[str, Any]) -> list[str]:
    """Flags for every setting of ``body`` that differs from ``defaults`` (what the run was started with)."""
    flags: list[str] = []
    for key, value in body.items():
        if key in _NOT_CARRIED:
            continue
        if isinstance(value, dict):
            flags.extend(_changed_flags(value, defaults.get(key, {})))
            continue
        if value == defaults.get(key):
            continue
        flag = "--" + key.replace("_", "-")
        if key == "data" and value:
            value = f"../shared/data/{Path(value).name}" if "shared" in str(value) else value
        if isinstance(value, bool):
            flags.append(flag if value else f"--no-{key.replace('_', '-')}")
        elif isinstance(value, list):
            flags.append(f"{flag} {' '.join(str(v) for v in value)}")
        else:
            flags.append(f"{flag} {value}")
    return flags


def release(
    run_dir: Path, name: str, version: str | None, bench: list[Path], out_dir: Path, *,
    compare: list[Path] | None = None, detail_base: str | None = None, denoise_base: str | None = None,
) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / f"{name}.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / f"{name}.onnx"
        card = export_generator(run_dir, staged, name=name, version=version)
        metrics, details = _bench_metrics(staged, bench, compare)
        proto = onnx.load(str(staged))
        contract = ModelContract.of_proto(proto)
        assert contract is not None, "export_generator stores the contract"
        contract.with_identity(contract.name, contract.version, metrics).store_in(proto)
        onnx.save(proto, str(staged))
        shutil.move(staged, model_path)
    resume_path = out_dir / f"{name}.resume.weights.h5"
    resume_step = _save_resume_weights(run_dir, resume_path)
    config = TrainConfig.load(run_dir / "config.json")
    data = config.data.data
    card["metrics"] = metrics
    card["contract"]["metrics"] = metrics
    card["evaluation"] = {
        "protocol": "x4, LR = bicubic downscale of HR cropped to a multiple of the scale (model.quality); "
        "PSNR/SSIM on Y (BT.601), scale pixels cropped from each border; whole image, no tiling",
        **details,
    }
    card["training"]["source"] = f"{run_dir.name}/best.weights.h5"
    card["training"]["data"] = f"{Path(data).parent.name}/{Path(data).name}" if data else None
    card["training"]["hardware"] = f"{cpu_name()}, {os.cpu_count()} CPUs, no GPU"
    card["training"]["steps_trained"] = resume_step
    card["training"]["wall_time_hours"] = _wall_hours(run_dir)
    card["resume"] = {
        "file": resume_path.name,
        "step": resume_step,
        "holds": "generator and discriminator" if config.stage == "gan" else "generator",
        "command": resume_command(config, name, resume_path.name, resume_step),
    }
    if config.stage == "pretrain":
        card["training"]["losses"] = {
            "pixel": {"kind": config.optim.loss, "weight": 1.0},
            "pooled": {"kind": "l1 of images average-pooled by the scale", "weight": config.optim.pooled_weight},
        }
        if config.optim.distill_from is not None:
            card["training"]["losses"]["distill"] = {
                "kind": f"{config.optim.loss} against the teacher's output on the LR crop",
                "teacher": str(config.optim.distill_from), "weight": config.optim.distill_weight}
    if config.stage == "gan":
        gan = config.gan
        perceptual: dict[str, Any] = {"name": gan.perceptual, "weight": gan.perceptual_weight}
        if gan.perceptual == "random-vgg19":
            perceptual.update(seed=gan.perceptual_seed, layers=list(gan.perceptual_layers),
                              redrawn_every_step=gan.perceptual_redraw,
                              paper="Liu et al., Generic Perceptual Loss, CVPR 2021 (arXiv 2103.10571)")
        elif gan.perceptual == "vgg54":
            perceptual.update(layer=gan.vgg_layer, rescale=gan.vgg_rescale, weights="VGG19 ImageNet")
        card["training"]["losses"] = {
            "perceptual": perceptual,
            "pixel": {"kind": gan.pixel_loss, "weight": gan.pixel_weight},
            "lowfreq": {"kind": "l1 of images average-pooled by the scale", "weight": gan.lowfreq_weight},
            "adversarial": {"weight": gan.adv_weight},
        }
        card["training"]["picked_by"] = (
            f"lowest validation NIQE with PSNR-Y at most {gan.max_psnr_drop} dB under bicubic's"
            + (f" and flat-region error at most {gan.max_flat_ratio}x bicubic's" if gan.max_flat_ratio else "")
            + " (validation split of the training folder)"
        )
    if detail_base:
        card["detail_base"] = detail_base
    if denoise_base:
        card["denoise_base"] = denoise_base
    card["onnx"]["file"] = model_path.name
    card["sha256"] = sha256_of(model_path)
    card_path_for(model_path).write_text(json.dumps(card, indent=2) + "\n")
    return card


def _wall_hours(run_dir: Path) -> float | None:
    """Training wall time summed from the run's progress log (:func:`training.runpack.run_log_lines`: the
    ``train.log`` a pack carried and ``<run>.log`` beside the run)."""
    lines = run_log_lines(run_dir)
    return _hours_from_log(lines) if lines else None


def _hours_from_log(lines: list[str]) -> float:
    """Sum the gaps between consecutive progress lines, ignoring pauses longer than 10 minutes."""
    stamps = []
    for line in lines:
        if " INFO training.trainer: step " in line:
            try:
                stamps.append(datetime.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
            except ValueError:
                continue
    total = 0.0
    for a, b in zip(stamps, stamps[1:]):
        gap = (b - a).total_seconds()
        if 0 < gap < 600:
            total += gap
    return round(total / 3600, 2)
