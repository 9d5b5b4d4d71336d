"""ONNX export: contract metadata, dynamic sizes, parity with Keras, card.json, the engine loads it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from model.contract import ModelContract

pytestmark = [pytest.mark.unit, pytest.mark.train]


def _fake_run(make_config, tmp_path, data, **arch):
    """A run directory holding config.json, best.weights.h5 and best.json, as training leaves it."""
    import keras

    from training.arch import build_generator
    from training.checkpoint import RunDir, write_json

    config = make_config(tmp_path, data, **{f"generator.{k}": v for k, v in arch.items()})
    run = RunDir(config.run_dir)
    config.save(run.config)
    keras.utils.set_random_seed(0)
    gen = build_generator(**config.generator.model_dump())
    # Push the weights away from the zero initialisation so parity is tested on a real signal.
    for v in gen.trainable_variables:
        v.assign(v + np.random.default_rng(1).normal(0, 0.05, v.shape).astype(np.float32))
    gen.save_weights(str(run.best_weights))
    write_json(run.best_info, {"step": 1234, "psnr_y": 20.0, "ssim_y": 0.5})
    rows = [
        {"step": 1000, "psnr_y": 19.0, "bicubic_psnr_y": 18.0},
        {"step": 1234, "psnr_y": 20.0, "bicubic_psnr_y": 18.0},
    ]
    run.history.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run, gen


@pytest.mark.parametrize("global_skip", ["bicubic", "none"])
def test_export_parity_contract_and_card(tmp_path, make_config, global_skip):
    from model.engine import Upscaler
    from training.export import export_generator

    run, gen = _fake_run(make_config, tmp_path, tmp_path, scale=2, global_skip=global_skip)
    out = tmp_path / "models" / "tiny" / "1" / "model.onnx"
    card = export_generator(run.root, out, name="tiny", version="1")

    proto = onnx.load(str(out))
    contract = ModelContract.read(out)
    assert contract is not None and contract.scale == 2 and (contract.name, contract.version) == ("tiny", "1")
    assert [i.name for i in proto.graph.input] == ["lr"] and [o.name for o in proto.graph.output] == ["hr"]
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "height", "width", 3]

    assert card["parity"]["max_abs_diff"] < 0.5
    saved = json.loads((out.parent / "model.card.json").read_text())
    assert saved["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert saved["scale"] == 2 and saved["onnx"]["opset"] == 17
    assert saved["architecture"]["blocks"] == 2 and saved["architecture"]["global_skip"] == global_skip
    assert saved["training"]["steps"] == 1234 and saved["training"]["loss"] == "l1"
    assert saved["training"]["validation_curve"] == [[1000, 19.0], [1234, 20.0]]
    assert saved["training"]["validation_bicubic_psnr_y"] == 18.0

    up = Upscaler.from_file(out, backend="onnxruntime", tile=0)
    lr = np.random.default_rng(2).integers(0, 256, (13, 17, 3), dtype=np.uint8)
    expected = np.clip(np.rint(np.asarray(gen(lr[None].astype(np.float32), training=False))[0]), 0, 255)
    assert np.abs(up.upscale(lr).astype(int) - expected).max() <= 1


def test_export_fails_and_leaves_nothing_when_parity_does_not_hold(tmp_path, make_config):
    from training.export import ExportError, export_generator

    run, _ = _fake_run(make_config, tmp_path, tmp_path, scale=4)
    out = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match="differ"):
        export_generator(run.root, out, tolerance=0.0)
    assert not out.exists() and not (tmp_path / "model.card.json").exists()


def test_export_weights_without_config_needs_the_architecture(tmp_path):
    from training.arch import build_generator
    from training.export import export_generator

    weights = tmp_path / "w" / "g.weights.h5"
    weights.parent.mkdir()
    build_generator(scale=2, filters=8, blocks=1).save_weights(str(weights))
    with pytest.raises(FileNotFoundError, match="--scale"):
        export_generator(weights, tmp_path / "a.onnx")
    card = export_generator(weights, tmp_path / "b.onnx", arch={"scale": 2, "filters": 8, "blocks": 1})
    assert card["scale"] == 2 and card["name"] == "w"


def test_export_prints_its_metrics_and_each_file_keeps_its_card(tmp_path, capsys):
    """`srgan export --eval-data` measured but printed nothing, and every export wrote over one card.json."""
    from PIL import Image

    from cli.main import main
    from training.arch import build_generator

    weights = tmp_path / "w" / "g.weights.h5"
    weights.parent.mkdir()
    build_generator(scale=2, filters=8, blocks=1).save_weights(str(weights))
    bench = tmp_path / "Set5"
    bench.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(bench / f"{i}.png")
    arch = ["--scale", "2", "--filters", "8", "--blocks", "1"]
    out = tmp_path / "models"
    assert main(["export", str(weights), "-o", str(out / "a.onnx"), *arch, "--eval-data", str(bench)]) == 0
    printed = capsys.readouterr().out
    assert "set5_psnr_y:" in printed and "(bicubic " in printed and "a.card.json" in printed
    assert main(["export", str(weights), "-o", str(out / "b.onnx"), *arch, "--version", "2"]) == 0
    a, b = (json.loads((out / f"{n}.card.json").read_text()) for n in "ab")
    assert a["onnx"]["file"] == "a.onnx" and "set5_psnr_y" in a["metrics"]
    assert b["onnx"]["file"] == "b.onnx" and b["version"] == "2"
    assert not (out / "card.json").exists()


def test_export_detail_base_goes_into_the_card_and_through_publish(tmp_path, capsys, monkeypatch):
    """A retrained GAN model exported with --publish lost its detail base: --detail-base writes it into the card,
    and the published version keeps it."""
    from cli.main import main
    from core.catalog.registry import Registry
    from core.settings import get_settings
    from training.arch import build_generator

    for key in ("SRGAN_REDIS_URL", "SRGAN_MODELS_DIR", "SRGAN_MODEL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SRGAN_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    weights = tmp_path / "w" / "g.weights.h5"
    weights.parent.mkdir()
    build_generator(scale=2, filters=8, blocks=1).save_weights(str(weights))
    arch = ["--scale", "2", "--filters", "8", "--blocks", "1"]
    out = tmp_path / "models"
    try:
        assert main(["export", str(weights), "-o", str(out / "psnr.onnx"), *arch, "--publish", "psnr"]) == 0
        assert main(["export", str(weights), "-o", str(out / "gan.onnx"), *arch, "--detail-base", "psnr",
                     "--publish", "gan"]) == 0, capsys.readouterr().err
        assert json.loads((out / "gan.card.json").read_text())["detail_base"] == "psnr"
        assert Registry(tmp_path / "data" / "models").get("gan").detail_base == "psnr"
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize(("global_skip", "skip_convs"), [("bicubic", 2), ("bicubic_edge", 1)])
def test_a_compact_generator_exports_runs_in_the_engine_and_states_its_flops(tmp_path, make_config, global_skip,
                                                                              skip_convs):
    from model.backends import open_backend, openvino_available
    from model.engine import Upscaler
    from training.export import export_generator

    run, gen = _fake_run(make_config, tmp_path, tmp_path, arch="compact", scale=4, filters=8, blocks=2,
                         global_skip=global_skip)
    out = tmp_path / "compact_x4.onnx"
    card = export_generator(run.root, out, name="compact_x4", version="1")  # parity and the engine check inside
    assert card["parity"]["max_abs_diff"] < 0.5
    arch = json.loads((tmp_path / "compact_x4.card.json").read_text())["architecture"]
    assert arch["type"] == "SRVGGNetCompact" and arch["arch"] == "compact" and arch["blocks"] == 2
    # by hand: 3x3 convs 3 -> 8, 2 x 8 -> 8, 8 -> 48 at LR resolution, and the bicubic skip's 5x5 3 -> 48 (two
    # when the edge weights are renormalised: the image and the in-image weights)
    assert arch["flops_per_input_pixel"] == 2 * (9 * 3 * 8 + 2 * 9 * 8 * 8 + 9 * 8 * 48 + skip_convs * 25 * 3 * 48)

    lr = np.random.default_rng(2).integers(0, 256, (13, 17, 3), dtype=np.uint8)
    expected = np.clip(np.rint(np.asarray(gen(lr[None].astype(np.float32), training=False))[0]), 0, 255)
    up = Upscaler.from_file(out, backend="onnxruntime", precision="f32", tile=0)
    assert np.abs(up.upscale(lr).astype(int) - expected).max() <= 1
    plain = open_backend(out, backend="onnxruntime", rewrite=False)
    rewritten = open_backend(out, backend="onnxruntime", rewrite=True)  # no conv after its shuffle: nothing to do
    x = lr[None].astype(np.float32)
    np.testing.assert_array_equal(plain.run(x), rewritten.run(x))
    if openvino_available():  # what `auto` picks on a CPU: bf16 where the CPU has it, checked against f32
        auto = Upscaler.from_file(out, backend="openvino", precision="auto", tile=0)
        assert auto.precision in ("f32", "bf16") and np.abs(auto.upscale(lr).astype(int) - expected).max() <= 3


def test_a_span_generator_exports_runs_in_the_engine_and_states_its_flops(tmp_path, make_config):
    from model.engine import Upscaler
    from training.export import export_generator

    run, gen = _fake_run(make_config, tmp_path, tmp_path, arch="span", scale=4, filters=8, blocks=2,
                         global_skip="bicubic_edge")
    out = tmp_path / "span_x4.onnx"
    export_generator(run.root, out, name="span_x4", version="1")
    arch = json.loads((tmp_path / "span_x4.card.json").read_text())["architecture"]
    assert arch["type"] == "SPAN" and arch["arch"] == "span" and arch["blocks"] == 2
    # by hand: 3x3 convs 3 -> 8 (head), 3 per block and the body conv 8 -> 8, the 1x1 cat conv 32 -> 8, the tail
    # 8 -> 48, the skip's 5x5 3 -> 48; the elementwise attention is not counted (convolutions only)
    convs = 9 * 3 * 8 + (3 * 2 + 1) * 9 * 8 * 8 + 32 * 8 + 9 * 8 * 48 + 25 * 3 * 48
    assert arch["flops_per_input_pixel"] == 2 * convs
    lr = np.random.default_rng(2).integers(0, 256, (13, 17, 3), dtype=np.uint8)
    expected = np.clip(np.rint(np.asarray(gen(lr[None].astype(np.float32), training=False))[0]), 0, 255)
    up = Upscaler.from_file(out, backend="onnxruntime", precision="f32", tile=0)
    assert np.abs(up.upscale(lr).astype(int) - expected).max() <= 1


def test_export_takes_a_checkpoint_prefix_as_its_help_says(tmp_path):
    """``srgan export runs/x/checkpoints/ckpt-1``: a checkpoint is named by a prefix that is no file itself (its
    ``.index`` and ``.data`` files are); the command refused it as a missing path. A name that is neither still
    is a usage error."""
    import tensorflow as tf

    from cli.main import main
    from training.arch import build_generator

    generator = build_generator(scale=2, filters=8, blocks=1)
    prefix = tf.train.Checkpoint(generator=generator).save(str(tmp_path / "checkpoints" / "ckpt"))
    assert prefix.endswith("ckpt-1") and not Path(prefix).exists()
    arch = ["--scale", "2", "--filters", "8", "--blocks", "1"]
    assert main(["export", prefix, "-o", str(tmp_path / "c.onnx"), *arch, "--version", "1"]) == 0
    assert json.loads((tmp_path / "c.card.json").read_text())["version"] == "1"
    assert main(["export", str(tmp_path / "checkpoints" / "ckpt-2"), "-o", str(tmp_path / "d.onnx"), *arch]) == 2
