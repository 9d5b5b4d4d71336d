"""The command line: registering imports nothing heavy; flags, files and saved runs make one config."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.unit, pytest.mark.train]

ROOT = Path(__file__).resolve().parents[3]


def _parser() -> argparse.ArgumentParser:
    from cli.train import register

    parser = argparse.ArgumentParser(prog="srgan")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_registering_imports_no_tensorflow():
    code = (
        "import argparse, sys; from cli.train import register; "
        "register(argparse.ArgumentParser().add_subparsers()); "
        "print([m for m in ('tensorflow', 'keras', 'tf2onnx', 'onnxruntime') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_subcommands_and_handlers():
    parser = _parser()
    for argv in (
        ["train", "pretrain"],
        ["train", "gan"],
        ["export", "x", "-o", "y.onnx"],
        ["eval", "--model", "m", "--data", "d"],
        ["release", "runs/x", "--name", "x", "--bench", "b"],
        ["figures", "curve", "runs/x", "-o", "c.png"],
    ):
        assert callable(parser.parse_args(argv).func)


def test_flags_override_the_config_file_which_overrides_defaults(tmp_path):
    from cli.train import resolve_config

    (tmp_path / "c.json").write_text(
        json.dumps({"steps": 77, "optim": {"lr": 3e-4, "loss": "mse", "warmup_steps": 10}, "data.hr_size": 64})
    )
    args = _parser().parse_args(
        [
            "train",
            "pretrain",
            "--config",
            str(tmp_path / "c.json"),
            "--lr",
            "1e-3",
            "--no-flip",
            "--jpeg-quality",
            "60",
            "90",
            "--boundaries",
            "10",
            "20",
            "--run-dir",
            str(tmp_path / "r"),
        ]
    )
    config = resolve_config(args)
    assert config.steps == 77 and config.optim.loss == "mse" and config.data.hr_size == 64
    assert config.optim.lr == 1e-3 and config.data.flip is False
    assert config.data.jpeg_quality == (60, 90) and config.optim.boundaries == [10, 20]
    assert config.run_dir == tmp_path / "r" and config.generator.blocks == 16


def test_resume_reads_the_saved_run(tmp_path):
    from cli.train import resolve_config
    from training.config import default_config, merge

    merge(default_config("pretrain"), {"generator.blocks": 3, "steps": 10, "optim.warmup_steps": 5,
                                        "run_dir": str(tmp_path)}).save(tmp_path / "config.json")
    args = _parser().parse_args(["train", "pretrain", "--run-dir", str(tmp_path), "--resume", "--steps", "20"])
    config = resolve_config(args)
    assert config.generator.blocks == 3 and config.steps == 20
    gan_args = _parser().parse_args(["train", "gan", "--run-dir", str(tmp_path), "--resume"])
    with pytest.raises(ValueError, match="pretrain run"):
        resolve_config(gan_args)


def test_stage_defaults():
    from training.config import default_config

    pre, gan = default_config("pretrain"), default_config("gan")
    assert pre.optim.schedule == "cosine" and pre.xla is False
    assert gan.optim.loss == "mse" and gan.optim.lr == 1e-4 and gan.optim.schedule == "piecewise"
    assert gan.optim.boundaries == [100_000] and gan.gan.adv_weight == 1e-3 and gan.gan.vgg_rescale == 12.75


def test_print_config(capsys):
    args = _parser().parse_args(["train", "gan", "--print-config", "--adv-weight", "0.01"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["gan"]["adv_weight"] == 0.01


def test_bad_values_are_refused(capsys):
    args = _parser().parse_args(["train", "pretrain", "--print-config", "--val-fraction", "1.5"])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "--val-fraction" in err and err.count("\n") == 1, err  # the flag, in one line (issue 22, item 8)


def test_precision_auto_follows_the_cpu(monkeypatch, tmp_path):
    from training import trainer

    assert trainer.resolve_precision("float32") == "float32"
    assert trainer.resolve_precision("mixed_bfloat16") == "mixed_bfloat16"
    cpuinfo = tmp_path / "cpuinfo"
    real_path = trainer.Path
    monkeypatch.setattr(trainer, "Path", lambda p: real_path(cpuinfo) if p == "/proc/cpuinfo" else real_path(p))
    cpuinfo.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert trainer.resolve_precision("auto") == "mixed_bfloat16"
    cpuinfo.write_text("flags\t\t: fpu avx2 avx512f\n")
    assert trainer.resolve_precision("auto") == "float32"


def test_one_parser_for_every_command():
    """cli/ owns the argument parsing: no parser in training/ or bench/; `python -m cli` is `srgan`."""
    for package in ("training", "bench"):
        parsers = [p.relative_to(ROOT).as_posix() for p in (ROOT / package).rglob("*.py")
                   if "ArgumentParser(" in p.read_text()]
        assert not parsers, f"argument parsers outside cli/: {parsers}"
    alias = subprocess.run([sys.executable, "-m", "cli", "--help"], cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
    srgan = subprocess.run([sys.executable, "-m", "cli.main", "--help"], cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
    assert alias.returncode == srgan.returncode == 0, alias.stderr
    assert alias.stdout == srgan.stdout
    for command in ("train", "export", "eval", "release", "figures", "bench", "deploy", "rollback"):
        assert command in srgan.stdout
    assert "exit codes:" in srgan.stdout and "130" in srgan.stdout


@pytest.mark.parametrize("argv,message", [
    (["--steps", "50"], "the warm-up (--warmup-steps 100) is longer than the 50 steps this run trains"),
    (["--steps", "1000", "--init-step", "950", "--schedule", "constant"],
     "longer than the 50 steps this run trains (--steps 1000 minus --init-step 950)"),
])
def test_a_warmup_longer_than_the_run_is_refused(capsys, argv, message):
    """``--steps 50`` with the default warm-up of 100 steps was accepted (the schedule cut it short silently)."""
    args = _parser().parse_args(["train", "pretrain", "--print-config", *argv])
    assert args.func(args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--steps", "50", "--warmup-steps", "50"], ["--steps", "50", "--warmup-steps", "0"],
                                  ["--steps", "50", "--schedule", "piecewise"]])
def test_a_warmup_that_fits_or_is_not_used_is_accepted(capsys, argv):
    args = _parser().parse_args(["train", "pretrain", "--print-config", *argv])
    assert args.func(args) == 0, capsys.readouterr().err


def test_help_states_each_default_once():
    """``--help`` printed ``(default: 100) (default: None)``: the flag's own text and the formatter's."""
    out = subprocess.run([sys.executable, "-m", "cli", "train", "pretrain", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())  # argparse wraps lines
    assert "(default: None)" not in text
    assert "(default: 100)" in text
    for option in re.split(r" (?=--[a-z])", text):
        assert option.count("(default:") <= 1, option


def _help(stage: str) -> str:
    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    stages = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction)).choices
    return stages[stage].format_help()


def test_pretrain_help_lists_no_gan_only_flags():
    pretrain, gan = _help("pretrain"), _help("gan")
    for flag in ("--adv-weight", "--perceptual", "--discriminator", "--d-filters", "--max-psnr-drop"):
        assert flag not in pretrain, flag
        assert flag in gan, flag
    for flag in ("--lr", "--degradation", "--jpeg-range", "--hr-size"):
        assert flag in pretrain and flag in gan, flag


@pytest.mark.parametrize(("flags", "expected"), [
    (["--warmup-steps", "-3"], "srgan train: error: --warmup-steps: Input should be greater than or equal to 0\n"),
    (["--hr-size", "2"], "srgan train: error: --hr-size: Input should be greater than or equal to 8\n"),
])
def test_a_bad_setting_is_one_line_naming_its_flag(flags, expected, tmp_path):
    result = subprocess.run([sys.executable, "-m", "cli.main", "train", "pretrain", "--data", str(tmp_path),
                             "--run-dir", str(tmp_path / "run"), *flags, "--print-config"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr == expected, result.stderr


def test_the_best_score_reads_as_a_score():
    from training.trainer import best_text

    assert best_text(28.8123, gan=False) == "PSNR-Y 28.812"
    assert best_text(-6.708, gan=True) == "NIQE 6.708"
    assert best_text(float("-inf"), gan=True) == "NIQE: none within the PSNR floor yet"


def test_the_compact_tier_round_trips_and_old_configs_are_srresnet(tmp_path):
    from cli.train import resolve_config
    from training.config import TrainConfig

    args = _parser().parse_args(["train", "pretrain", "--arch", "compact", "--filters", "48", "--blocks", "12",
                                 "--distill-from", "model/weights/srresnet_x4.resume.weights.h5",
                                 "--distill-weight", "0.5", "--run-dir", str(tmp_path)])
    config = resolve_config(args)
    config.save(tmp_path / "config.json")
    again = TrainConfig.load(tmp_path / "config.json")
    assert again == config and again.generator.arch == "compact" and again.generator.blocks == 12
    assert again.optim.distill_from == Path("model/weights/srresnet_x4.resume.weights.h5")
    assert again.optim.distill_weight == 0.5

    old = json.loads((tmp_path / "config.json").read_text())  # a run saved before arch and distillation existed
    del old["generator"]["arch"], old["optim"]["distill_from"], old["optim"]["distill_weight"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    loaded = TrainConfig.load(tmp_path / "old.json")
    assert loaded.generator.arch == "srresnet" and loaded.optim.distill_from is None
    assert loaded.generator.model_dump(exclude={"arch"}) == config.generator.model_dump(exclude={"arch"})


def test_distillation_is_a_pretraining_option(capsys):
    args = _parser().parse_args(["train", "gan", "--print-config", "--distill-from", "x.weights.h5"])
    assert args.func(args) != 0
    assert "--distill-from is a pretraining option" in capsys.readouterr().err


def test_a_shipped_cards_architecture_is_found_beside_its_weights(tmp_path):
    from training.checkpoint import find_generator, generator_config_of

    shipped = ROOT / "model" / "weights"
    source = find_generator(shipped / "srresnet_x4.resume.weights.h5")
    assert source.config is None
    arch = generator_config_of(source)  # srresnet_x4.card.json, written before arch existed
    assert (arch.arch, arch.scale, arch.filters, arch.blocks, arch.global_skip) == ("srresnet", 4, 64, 16, "bicubic")
    (tmp_path / "fast_x4.card.json").write_text(json.dumps(
        {"architecture": {"type": "SRVGGNetCompact", "arch": "compact", "scale": 4, "filters": 48, "blocks": 12,
                          "flops_per_input_pixel": 556128.0}}))
    (tmp_path / "fast_x4.resume.weights.h5").write_bytes(b"")
    carded = generator_config_of(find_generator(tmp_path / "fast_x4.resume.weights.h5"))
    assert (carded.arch, carded.filters, carded.blocks) == ("compact", 48, 12)
