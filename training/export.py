"""Export a trained generator to ONNX under the contract of ``model/contract.py``.

The file takes ``lr`` (N, H, W, 3) float32 0..255 and gives ``hr``
(N, H*s, W*s, 3) float32 0..255, with batch, height and width dynamic; the
contract (scale, name, version, metrics) is in its ``metadata_props``. A
``card.json`` beside it records the architecture, the training run, the
metrics, the opset and the file's sha256. The export fails, leaving no file,
when ONNX Runtime and Keras disagree by more than ``tolerance`` on a random
image, or when the engine of ``model/`` cannot run the file.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import keras
import numpy as np
import onnx
import tensorflow as tf
import tf2onnx

from core.catalog.registry import card_path_for, sha256_of
from model.backends import runtime
from model.contract import ModelContract
from model.engine import Upscaler
from model.graph import flops_per_input_pixel
from model.quality import metric_tag
from training.arch import build_generator
from training.checkpoint import GeneratorSource, find_generator, generator_config_of, load_generator_weights
from training.config import GanConfig, GeneratorConfig, TrainConfig
from training.evaluate import evaluate_model
from training.sources import is_div2k

log = logging.getLogger(__name__)

PARITY_SHAPE = (2, 37, 45, 3)
"""Random input of the parity check: a batch of two, odd sizes."""


ARCH_TYPES = {"srresnet": "SRResNet", "compact": "SRVGGNetCompact", "span": "SPAN"}
"""The card's ``architecture.type`` of each ``GeneratorConfig.arch`` (``srgan import`` names Real-ESRGAN's compact
network so too)."""


class ExportError(RuntimeError):
    """The exported file does not behave like the Keras generator."""


def keras_to_onnx(generator: keras.Model, opset: int = 17) -> onnx.ModelProto:
    """The generator as an ONNX graph with input ``lr`` and output ``hr``, sizes dynamic."""
    spec = (tf.TensorSpec((None, None, None, 3), tf.float32, name="lr"),)
    fn = tf.function(lambda lr: generator(lr, training=False))
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=opset)
    _rename_output(proto, "hr")
    _name_dims(proto.graph.input[0], ["batch", "height", "width", 3])
    _name_dims(proto.graph.output[0], ["batch", "out_height", "out_width", 3])
    onnx.checker.check_model(proto)
    return proto


def _rename_output(proto: onnx.ModelProto, new: str) -> None:
    old = proto.graph.output[0].name
    if old == new:
        return
    for node in proto.graph.node:
        node.output[:] = [new if o == old else o for o in node.output]
        node.input[:] = [new if i == old else i for i in node.input]
    proto.graph.output[0].name = new


def _name_dims(value_info: onnx.ValueInfoProto, dims: list[str | int]) -> None:
    for dim, want in zip(value_info.type.tensor_type.shape.dim, dims):
        if isinstance(want, str):
            dim.ClearField("dim_value")
            dim.dim_param = want


def parity_check(generator: keras.Model, path: Path, tolerance: float, seed: int = 0) -> float:
    """Max |ONNX Runtime - Keras| on a random image; raises :class:`ExportError` above ``tolerance``."""
    lr = np.random.default_rng(seed).uniform(0, 255, PARITY_SHAPE).astype(np.float32)
    expected = np.asarray(generator(lr, training=False))
    session = runtime("onnxruntime").InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["hr"], {"lr": lr})[0]
    if got.shape != expected.shape:
        raise ExportError(f"ONNX output shape {got.shape} differs from Keras {expected.shape}")
    diff = float(np.max(np.abs(got - expected)))
    if not diff < tolerance:
        raise ExportError(f"ONNX and Keras differ by up to {diff:.4f} (tolerance {tolerance}) on 0..255")
    return diff


def engine_check(path: Path, scale: int) -> None:
    """Run the file through ``model.engine.Upscaler``, tiled, as the workers will."""
    up = Upscaler.from_file(path, backend="onnxruntime", tile=16, overlap=4)
    if up.scale != scale:
        raise ExportError(f"the engine reads scale {up.scale} from the file, expected {scale}")
    lr = np.random.default_rng(1).integers(0, 256, (21, 35, 3), dtype=np.uint8)
    out = up.upscale(lr)
    if out.shape != (21 * scale, 35 * scale, 3):
        raise ExportError(f"the engine returned {out.shape} for a 35x21 image at x{scale}")


def gan_loss_summary(gan: GanConfig) -> str:
    """The GAN stage's loss in one line for the card (its terms in ``training.losses`` of the card): each term with
    a weight, e.g. ``1 x random-vgg19 + 1 x l1 + 2 x pooled l1 + 0.1 x adversarial``."""
    perceptual = (f"vgg54 ({gan.vgg_layer} / {gan.vgg_rescale})" if gan.perceptual == "vgg54" else gan.perceptual)
    terms = [(gan.perceptual_weight if gan.perceptual != "none" else 0.0, perceptual),
             (gan.pixel_weight, gan.pixel_loss), (gan.lowfreq_weight, "pooled l1"),
             (gan.adv_weight, "adversarial")]
    return " + ".join(f"{w:g} x {what}" for w, what in terms if w) or "none"


def export_generator(
    source: Path,
    output: Path,
    *,
    name: str | None = None,
    version: str | None = None,
    arch: dict[str, Any] | None = None,
    opset: int = 17,
    tolerance: float = 0.5,
    eval_data: Path | None = None,
) -> dict[str, Any]:
    """Export the generator at ``source`` (run directory, checkpoint or weights) to ``output``.

    Returns the card, written beside the file as ``<stem>.card.json``
    (:func:`core.catalog.registry.card_path_for`: two exports into one folder keep
    their own cards). ``srgan export --publish`` then publishes it as ``srgan
    deploy`` does.
    """
    src = find_generator(Path(source))
    gen_cfg = generator_config_of(src, GeneratorConfig(**arch) if arch else None)
    if arch:
        gen_cfg = gen_cfg.model_copy(update=arch)
    generator = build_generator(**gen_cfg.model_dump())
    try:
        load_generator_weights(generator, src)
    except (ValueError, AssertionError) as exc:
        raise ExportError(f"{src.weights} does not fit a generator {gen_cfg}: {exc}") from exc
    steps = _training_steps(src)
    run_name = _run_name(src)
    contract = ModelContract(scale=gen_cfg.scale).with_identity(
        name or run_name, version or (f"step-{steps}" if steps is not None else "1")
    )
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    proto = keras_to_onnx(generator, opset)
    contract.store_in(proto)
    onnx.save(proto, str(output))
    try:
        diff = parity_check(generator, output, tolerance)
        engine_check(output, gen_cfg.scale)
        metrics: dict[str, float] = {}
        evaluation: dict[str, Any] = {}
        if eval_data is not None:
            report = evaluate_model(output, eval_data, scale=gen_cfg.scale)
            tag = metric_tag(eval_data)
            metrics = {f"{tag}_psnr_y": report["mean_psnr_y"], f"{tag}_ssim_y": report["mean_ssim_y"]}
            evaluation = {"data": str(eval_data), "images": len(report["images"]),
                          "bicubic_psnr_y": report["bicubic_mean_psnr_y"],
                          "bicubic_ssim_y": report["bicubic_mean_ssim_y"]}
            contract = contract.with_identity(contract.name, contract.version, metrics)
            contract.store_in(proto)
            onnx.save(proto, str(output))
    except Exception:
        output.unlink(missing_ok=True)
        raise
    card = _card(contract, gen_cfg, src, steps, opset, output, diff, tolerance)
    card["architecture"]["flops_per_input_pixel"] = flops_per_input_pixel(proto)
    if evaluation:
        card["evaluation"] = evaluation
    card_path_for(output).write_text(json.dumps(card, indent=2) + "\n")
    log.info("exported %s: parity max |diff| %.4f, sha256 %s", output, diff, card["sha256"])
    return card


def _training_steps(src: GeneratorSource) -> int | None:
    if src.kind == "checkpoint":
        match = re.search(r"ckpt-(\d+)$", str(src.weights))
        return int(match.group(1)) if match else None
    info = src.weights.parent / "best.json"
    if src.weights.name == "best.weights.h5" and info.is_file():
        return int(json.loads(info.read_text())["step"])
    return None


def _run_name(src: GeneratorSource) -> str:
    folder = src.weights.parent
    if folder.name == "checkpoints":
        folder = folder.parent
    return folder.name or "srresnet"


def _validation_history(src: GeneratorSource) -> dict[str, Any]:
    """The run's validation curve ([step, PSNR-Y] pairs) and the bicubic baseline of its validation set."""
    history = src.weights.parent / "validation.jsonl"
    if src.weights.parent.name == "checkpoints":
        history = src.weights.parent.parent / "validation.jsonl"
    if not history.is_file():
        return {}
    rows = [json.loads(line) for line in history.read_text().splitlines() if line.strip()]
    by_step = {int(r["step"]): float(r["psnr_y"]) for r in rows}  # a resumed run may repeat a step
    out: dict[str, Any] = {"validation_curve": [[step, by_step[step]] for step in sorted(by_step)]}
    baselines = [r["bicubic_psnr_y"] for r in rows if "bicubic_psnr_y" in r]
    if baselines:
        out["validation_bicubic_psnr_y"] = baselines[-1]
    return out


def _card(
    contract: ModelContract, gen_cfg: GeneratorConfig, src: GeneratorSource, steps: int | None, opset: int,
    output: Path, diff: float, tolerance: float,
) -> dict[str, Any]:
    cfg = src.config
    training: dict[str, Any] = {"source": str(src.weights), "steps": steps}
    if cfg is not None:
        fmt = cfg.data.format
        if fmt == "auto" and cfg.data.data is not None:
            fmt = "div2k" if is_div2k(cfg.data.data) else "folder"
        loss = cfg.optim.loss if cfg.stage == "pretrain" else gan_loss_summary(cfg.gan)
        training.update(
            stage=cfg.stage,
            data=str(cfg.data.data),
            data_format=fmt,
            degradation=_degradation(cfg, fmt),
            hr_crop=cfg.data.hr_size,
            batch_size=cfg.data.batch_size,
            loss=loss,
            optimizer={"name": "adam", "lr": cfg.optim.lr, "schedule": cfg.optim.schedule},
            planned_steps=cfg.steps,
        )
    if cfg is not None and cfg.data.degradation == "realworld":
        training["degradation_ranges"] = cfg.degrade.model_dump(mode="json")
        training["extra_data"] = [str(p) for p in cfg.data.extra_data]
    training.update(_validation_history(src))
    return {
        "name": contract.name,
        "version": contract.version,
        "scale": contract.scale,
        "architecture": {"type": ARCH_TYPES[gen_cfg.arch], **gen_cfg.model_dump()},
        "training": training,
        "metrics": contract.metrics,
        "onnx": {
            "file": output.name,
            "opset": opset,
            "input": {
                "name": contract.input_name,
                "layout": contract.layout,
                "dtype": contract.dtype,
                "value_range": list(contract.value_range),
            },
            "output": {
                "name": contract.output_name,
                "layout": contract.layout,
                "dtype": contract.dtype,
                "value_range": list(contract.value_range),
            },
        },
        "contract": json.loads(contract.to_metadata()["srgan_contract"]),
        "parity": {"max_abs_diff": diff, "tolerance": tolerance},
        "sha256": sha256_of(output),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _degradation(cfg: TrainConfig, fmt: str) -> str:
    if cfg.data.degradation == "realworld":
        return ("realworld: Real-ESRGAN's second-order blur/resize/noise/JPEG model, BSRGAN's shuffled order, "
                "sinc + JPEG last (training.degradations; ranges in degradation_ranges)")
    return f"div2k {cfg.data.div2k_track}" if fmt == "div2k" else "bicubic (model.quality)"


def export_untrained(spec: str, path: Path, scale: int = 4) -> Path:
    """``arch:filters:blocks[:global_skip]`` (``compact:48:12``, ``compact:64:16:bicubic_edge``; the skip
    ``bicubic`` unless another is given) as an untrained x``scale`` ONNX generator at ``path``, its weights pushed
    off the zero-initialised tail so that no layer computes zeros."""
    arch, filters, blocks, *skip = spec.split(":")
    keras.utils.set_random_seed(0)
    generator = build_generator(scale=scale, filters=int(filters), blocks=int(blocks),
                                global_skip=skip[0] if skip else "bicubic", arch=arch,  # type: ignore[arg-type]
                                zero_init_residual=False)
    for v in generator.trainable_variables:
        v.assign(v + np.random.default_rng(1).normal(0, 0.01, v.shape).astype(np.float32))
    proto = keras_to_onnx(generator)
    ModelContract(scale=scale, name=spec.replace(":", "_"), version="untrained").store_in(proto)
    onnx.save(proto, str(path))
    return path
