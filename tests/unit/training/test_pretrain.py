"""Pretraining: the loss falls on a fixed batch; runs checkpoint, resume exactly and keep their files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.unit, pytest.mark.train]

ROOT = Path(__file__).resolve().parents[3]


def _fixed_batch():
    """Two smooth 32x32 HR crops and their bicubic LR."""
    from PIL import Image

    rng = np.random.default_rng(0)
    hr = [
        Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).resize((32, 32), Image.Resampling.BICUBIC)
        for _ in range(2)
    ]
    lr = [img.resize((8, 8), Image.Resampling.BICUBIC) for img in hr]
    return (np.stack([np.asarray(i) for i in lr]).astype(np.float32),
            np.stack([np.asarray(i) for i in hr]).astype(np.float32))


@pytest.mark.parametrize(
    ("loss", "global_skip", "ratio"),
    [("mse", "bicubic", 0.6), ("l1", "bicubic", 0.9), ("mse", "none", 0.6), ("l1", "none", 0.7)],
)
def test_a_few_pretraining_steps_drive_the_loss_down_on_one_batch(tmp_path, make_config, loss, global_skip, ratio):
    import keras
    import tensorflow as tf

    from training.pretrain import PretrainStage
    from training.stage import Stage

    keras.utils.set_random_seed(0)
    overrides = {
        "optim.loss": loss,
        "optim.lr": 1e-3,
        "optim.schedule": "constant",
        "generator.global_skip": global_skip,
    }
    stage = PretrainStage(make_config(tmp_path, tmp_path, **overrides))
    assert isinstance(stage, Stage)
    lr, hr = _fixed_batch()
    step = tf.function(stage.train_step)
    losses = [float(step(lr, hr)["loss"]) for _ in range(30)]
    assert losses[-1] < ratio * losses[0], losses


RESUME_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np
    import tensorflow as tf
    from training.config import TrainConfig, merge
    from training.trainer import RunExists, train

    base = TrainConfig.load(Path(sys.argv[1]))
    straight = merge(base, {"run_dir": sys.argv[2], "steps": 4})
    split = merge(base, {"run_dir": sys.argv[3], "steps": 4})
    train(straight)
    first = train(split, stop_at=2)  # as if stopped (Ctrl-C, SIGTERM) after step 2
    try:
        train(split)
        raise SystemExit("a second run in the same directory was not refused")
    except RunExists:
        pass
    second = train(split, resume=True)

    def variables(run):
        reader = tf.train.load_checkpoint(str(Path(run) / "checkpoints"))
        return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if "OBJECT_GRAPH" not in k}

    a, b = variables(sys.argv[2]), variables(sys.argv[3])
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    worst = max(float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)))) for k in a)
    print(json.dumps({"n": len(a), "worst": worst, "first": first.step, "second": second.step,
                      "keys": sorted(k for k in a if "optimizer" in k)[:3]}))
    """
)


def test_resume_after_two_steps_matches_four_straight(tmp_path, image_folder, make_config):
    config = make_config(tmp_path, image_folder, deterministic=True, seed=5, ckpt_every=1, keep=2)
    config_file = tmp_path / "config.json"
    config.save(config_file)
    out = subprocess.run(
        [sys.executable, "-c", RESUME_SCRIPT, str(config_file), str(tmp_path / "straight"), str(tmp_path / "split")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["first"] == 2 and result["second"] == 4
    assert result["keys"], "the optimiser state is not in the checkpoint"
    assert result["worst"] < 1e-5, result

    run = tmp_path / "split"
    assert sorted(p.name for p in (run / "checkpoints").glob("*.index")) == ["ckpt-3.index", "ckpt-4.index"]
    assert (run / "best.weights.h5").is_file()
    best = json.loads((run / "best.json").read_text())
    history = [json.loads(line) for line in (run / "validation.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [2, 4]
    assert all(h["bicubic_psnr_y"] > 0 and len(h["per_image"]) == 2 for h in history)
    assert best["psnr_y"] == max(h["psnr_y"] for h in history)
    assert json.loads((run / "config.json").read_text())["steps"] == 4
    assert list((run / "samples" / "step_00000004").glob("*.png"))
    assert list((run / "samples" / "reference").glob("*_bicubic.png"))
    assert list((run / "logs" / "train").iterdir()) and list((run / "logs" / "val").iterdir())


def test_cli_pretrain_then_resume(tmp_path, image_folder):
    cmd = [
        sys.executable,
        "-m",
        "cli",
        "train",
        "pretrain",
        "--data",
        str(image_folder),
        "--run-dir",
        str(tmp_path / "run"),
        "--steps",
        "2",
        "--blocks",
        "1",
        "--filters",
        "8",
        "--hr-size",
        "32",
        "--batch-size",
        "2",
        "--val-fraction",
        "0.25",
        "--log-every",
        "1",
        "--warmup-steps",
        "1",
        "--no-xla",
    ]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "steps/s" in first.stderr and "validation step 2" in first.stderr
    assert not re.search(r"^E\d{4} ", first.stderr, re.MULTILINE), "a healthy run logs no C++ error line"
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "train",
            "pretrain",
            "--run-dir",
            str(tmp_path / "run"),
            "--resume",
            "--steps",
            "3",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr and "step 3/3" in resumed.stderr
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["generator"]["blocks"] == 1 and saved["steps"] == 3


def test_a_run_seeded_from_bare_weights_continues_at_their_step(tmp_path, image_folder, make_config):
    """A new machine has only the shipped generator weights: the run goes on from their step."""
    import numpy as np

    from training.config import merge
    from training.trainer import train

    first = make_config(tmp_path / "a", image_folder, steps=2, **{"optim.schedule": "cosine"})
    train(first)
    weights = tmp_path / "a" / "run" / "best.weights.h5"
    seeded = merge(first, {"run_dir": str(tmp_path / "b"), "steps": 40, "init_weights": str(weights),
                           "init_step": 30, "val_every": 100, "ckpt_every": 100, "optim.warmup_steps": 4})
    from training.pretrain import PretrainStage

    stage = PretrainStage(seeded)
    stage.build()
    stage.initialize()
    reference = PretrainStage(first)
    reference.build()
    reference.generator.load_weights(str(weights))
    for a, b in zip(stage.generator.get_weights(), reference.generator.get_weights()):
        np.testing.assert_array_equal(a, b)
    # the rate continues the 40-step schedule at step 30, ramped over 4 fresh steps
    inner = stage.g_optimizer.learning_rate
    schedule = stage.g_optimizer._learning_rate
    full = float(schedule.inner(30.0))
    assert float(inner) == pytest.approx(full / 4, rel=1e-5)
    result = train(seeded)
    assert result.step == 40
    assert json.loads((tmp_path / "b" / "config.json").read_text())["init_step"] == 30


PACK_SCRIPT = textwrap.dedent(
    """
    import json, subprocess, sys
    from pathlib import Path
    import numpy as np
    import tensorflow as tf
    from training.config import TrainConfig, merge
    from training.runpack import pack_run, unpack_run
    from training.trainer import train

    base = TrainConfig.load(Path(sys.argv[1]))
    straight, split, moved = sys.argv[2], sys.argv[3], sys.argv[4]
    train(merge(base, {"run_dir": straight, "steps": 4}))
    train(merge(base, {"run_dir": split, "steps": 4}), stop_at=2)
    packed = Path(split).parent / "run.tar"
    names = pack_run(Path(split), packed)
    unpack_run(packed, Path(moved))  # another machine: only the file travelled
    second = train(merge(TrainConfig.load(Path(moved) / "config.json"), {"run_dir": moved}), resume=True)

    def variables(run):
        reader = tf.train.load_checkpoint(str(Path(run) / "checkpoints"))
        return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if "OBJECT_GRAPH" not in k}

    a, b = variables(straight), variables(moved)
    worst = max(float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)))) for k in a)
    print(json.dumps({"worst": worst, "second": second.step, "names": names, "same": sorted(a) == sorted(b)}))
    """
)


def test_a_packed_run_continues_exactly_elsewhere(tmp_path, image_folder, make_config):
    config = make_config(tmp_path, image_folder, deterministic=True, seed=5, ckpt_every=1, keep=3)
    config_file = tmp_path / "config.json"
    config.save(config_file)
    out = subprocess.run(
        [sys.executable, "-c", PACK_SCRIPT, str(config_file), str(tmp_path / "straight"), str(tmp_path / "split"),
         str(tmp_path / "moved")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["second"] == 4 and result["same"]
    assert result["worst"] < 1e-5, result
    assert "checkpoints/ckpt-2.index" in result["names"] and "checkpoints/ckpt-1.index" not in result["names"]
    assert {"config.json", "validation.jsonl", "best.weights.h5", "checkpoints/checkpoint"} <= set(result["names"])
    again = subprocess.run([sys.executable, "-m", "cli.main", "train", "unpack", str(tmp_path / "run.tar"),
                            str(tmp_path / "moved")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already holds checkpoints" in again.stderr


def test_the_pooled_term_adds_an_l1_of_the_pooled_images_to_the_pixel_loss(tmp_path, make_config):
    """optim.pooled_weight: the step's loss is the pixel L1 plus the weight times the L1 of both images
    average-pooled by the scale (what keeps local colour means), computed on the same output."""
    import keras
    import tensorflow as tf

    from training.losses import lowfreq_loss, pixel_loss
    from training.pretrain import PretrainStage

    lr, hr = _fixed_batch()
    losses = {}
    for weight in (0.0, 2.5):
        keras.utils.set_random_seed(0)
        config = make_config(tmp_path, tmp_path, **{"optim.pooled_weight": weight, "optim.lr": 1e-12})
        stage = PretrainStage(config)
        sr = stage.generator(tf.constant(lr), training=True)
        expected = float(pixel_loss("l1")(hr, sr) + weight * lowfreq_loss(config.generator.scale)(hr, sr))
        losses[weight] = (float(stage.train_step(tf.constant(lr), tf.constant(hr))["loss"]), expected)
    for got, expected in losses.values():
        assert got == pytest.approx(expected, rel=1e-4)
    assert losses[2.5][0] > losses[0.0][0]


def test_an_x4_models_weights_seed_an_x2_generator_layer_by_layer(tmp_path, make_config):
    """init_scale: an x2 run starting from x4 weights gets every layer the two share (head, trunk, first upsampler,
    tail) and keeps nothing of the x4's second upsampler; the x2 still upscales by 2."""
    import keras
    import numpy as np

    from training.arch import build_generator
    from training.pretrain import PretrainStage

    keras.utils.set_random_seed(1)
    x4 = build_generator(scale=4, filters=8, blocks=1, global_skip="bicubic")
    rng = np.random.default_rng(7)
    for layer in x4.layers:  # non-zero everywhere, so a copied layer cannot equal a fresh one by chance
        layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()])
    x4.save_weights(tmp_path / "x4.weights.h5")
    config = make_config(tmp_path, tmp_path, **{"generator.scale": 2, "generator.filters": 8, "generator.blocks": 1,
                                                "generator.global_skip": "bicubic", "init_scale": 4,
                                                "init_weights": str(tmp_path / "x4.weights.h5")})
    stage = PretrainStage(config)
    stage.build()
    stage.initialize()
    x2 = stage.generator
    assert not any(layer.name.startswith("up1") for layer in x2.layers)
    for name in ("head_conv", "res0_conv1", "trunk_bn", "up0_conv", "tail_conv"):
        for got, want in zip(x2.get_layer(name).get_weights(), x4.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, want)
    assert x2(np.zeros((1, 8, 8, 3), "float32")).shape == (1, 16, 16, 3)


def test_distillation_adds_the_teachers_output_as_a_second_target(tmp_path, make_config):
    """optim.distill_from: loss = L1(sr, hr) + w * L1(sr, teacher(lr)) on one batch; the teacher (a released file,
    its architecture read from the card beside it) stays frozen while the compact student learns."""
    import keras
    import tensorflow as tf

    from training.arch import build_generator
    from training.pretrain import PretrainStage

    keras.utils.set_random_seed(3)
    teacher = build_generator(scale=4, filters=8, blocks=1, global_skip="bicubic", zero_init_residual=True)
    rng = np.random.default_rng(5)
    for v in teacher.trainable_variables:  # off bicubic, so the two targets differ
        v.assign(v + rng.normal(0, 0.05, v.shape).astype(np.float32))
    teacher.save_weights(tmp_path / "tiny_x4.resume.weights.h5")
    (tmp_path / "tiny_x4.card.json").write_text(json.dumps({"architecture": {
        "type": "SRResNet", "scale": 4, "filters": 8, "blocks": 1, "global_skip": "bicubic"}}))
    config = make_config(tmp_path, tmp_path, **{
        "generator.arch": "compact", "generator.filters": 8, "generator.blocks": 2, "optim.lr": 1e-3,
        "optim.schedule": "constant", "optim.distill_from": str(tmp_path / "tiny_x4.resume.weights.h5"),
        "optim.distill_weight": 0.5})
    stage = PretrainStage(config)
    stage.build()
    lr, hr = _fixed_batch()
    student = stage.generator
    for v in student.trainable_variables:
        v.assign(v + rng.normal(0, 0.05, v.shape).astype(np.float32))
    sr = np.asarray(student(lr, training=True))
    target = np.asarray(teacher(lr, training=False))
    assert np.abs(target - hr).mean() > 1 and np.abs(target - sr).mean() > 1
    frozen = stage._teacher
    assert frozen is not None
    teacher_before = [w.copy() for w in frozen.get_weights()]

    metrics = tf.function(stage.train_step)(lr, hr)
    distill = np.mean(np.abs(sr - target)) / 255
    np.testing.assert_allclose(float(metrics["distill"]), distill, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["loss"]), np.mean(np.abs(sr - hr)) / 255 + 0.5 * distill, rtol=1e-5)
    for got, want in zip(frozen.get_weights(), teacher_before):
        np.testing.assert_array_equal(got, want)
    assert np.abs(np.asarray(student(lr)) - sr).max() > 0, "the student learns"
    assert not frozen.trainable_variables


def test_a_teacher_of_another_scale_is_refused(tmp_path, make_config):
    from training.arch import build_generator
    from training.pretrain import PretrainStage

    build_generator(scale=2, filters=8, blocks=1).save_weights(tmp_path / "x2.weights.h5")
    (tmp_path / "x2.card.json").write_text(json.dumps({"architecture": {"scale": 2, "filters": 8, "blocks": 1}}))
    config = make_config(tmp_path, tmp_path, **{"optim.distill_from": str(tmp_path / "x2.weights.h5")})
    with pytest.raises(ValueError, match="upscales x2"):
        PretrainStage(config)
