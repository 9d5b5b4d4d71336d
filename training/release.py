"""Ship a run as a packaged model: ONNX + model card in ``model/weights/``, plus the weights training resumes from.

    python -m training.release runs/srresnet_x4 --name srresnet_x4 \
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

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import onnx

from model.contract import ModelContract

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "model" / "weights"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _bench_metrics(model: Path, folders: list[Path]) -> tuple[dict[str, float], dict[str, Any]]:
    from training.evaluate import evaluate_model

    metrics: dict[str, float] = {}
    details: dict[str, Any] = {}
    for folder in folders:
        report = evaluate_model(model, folder)
        tag = folder.name.lower()
        for key in ("mean_psnr_y", "mean_ssim_y", "bicubic_mean_psnr_y", "bicubic_mean_ssim_y"):
            metrics[f"{tag}_{key.replace('mean_', '')}"] = round(float(report[key]), 4)
        images = report["images"]
        details[folder.name] = {
            "images": len(images),
            "beats_bicubic_on_every_image": all(i["psnr_y"] > i["bicubic_psnr_y"] for i in images),
            "per_image": images,
        }
    return metrics, details


def _save_resume_weights(run_dir: Path, dest: Path) -> int:
    """The latest checkpoint's generator as a ``.weights.h5`` file; returns its step."""
    import tensorflow as tf

    from training.arch import build_generator
    from training.config import TrainConfig

    config = TrainConfig.load(run_dir / "config.json")
    latest = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    if latest is None:
        raise SystemExit(f"no checkpoint in {run_dir / 'checkpoints'}")
    generator = build_generator(**config.generator.model_dump())
    step = tf.Variable(0, dtype=tf.int64)
    tf.train.Checkpoint(generator=generator, step=step).restore(latest).expect_partial()
    generator.save_weights(str(dest))
    return int(step.numpy())


def release(run_dir: Path, name: str, version: str | None, bench: list[Path], out_dir: Path) -> dict[str, Any]:
    from training.config import TrainConfig
    from model.registry import sha256_of
    from training.export import export_generator

    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / f"{name}.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / f"{name}.onnx"
        card = export_generator(run_dir, staged, name=name, version=version)
        metrics, details = _bench_metrics(staged, bench)
        proto = onnx.load(str(staged))
        contract = ModelContract.from_metadata({p.key: p.value for p in proto.metadata_props})
        contract = contract.with_identity(contract.name, contract.version, metrics)
        entries = contract.to_metadata()
        for prop in proto.metadata_props:
            if prop.key in entries:
                prop.value = entries[prop.key]
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
        "command": (
            f"srgan train pretrain --data ../shared/data/train --run-dir runs/{name} --steps {config.steps} "
            f"--init-weights model/weights/{resume_path.name} --init-step {resume_step} --resume"
        ),
    }
    card["onnx"]["file"] = model_path.name
    card["sha256"] = sha256_of(model_path)
    (out_dir / f"{name}.card.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def _wall_hours(run_dir: Path) -> float | None:
    """Training wall time summed from the run's progress log (``train.log`` beside or above the run)."""
    for log_file in (run_dir / "train.log", run_dir.parent / f"{run_dir.name}.log"):
        if log_file.is_file():
            return _hours_from_log(log_file.read_text().splitlines())
    return None


def _hours_from_log(lines: list[str]) -> float:
    """Sum the gaps between consecutive progress lines, ignoring pauses longer than 10 minutes."""
    from datetime import datetime

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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.release", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--name", required=True)
    p.add_argument("--version", help="default: step-<best step>")
    p.add_argument("--bench", type=Path, nargs="+", required=True, help="benchmark folders to measure (not to pick)")
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    args = p.parse_args(argv)
    card = release(args.run_dir, args.name, args.version, args.bench, args.out)
    print(json.dumps({"version": card["version"], "metrics": card["metrics"], "resume": card["resume"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
