"""Shipping a run: the ONNX file, its card with bench metrics, the resume weights, the figures."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from PIL import Image

from core.catalog.registry import sha256_of
from model.contract import ModelContract
from model.engine import Upscaler

pytestmark = [pytest.mark.unit, pytest.mark.train]


def test_release_ships_model_card_metrics_and_resume_weights(tmp_path, image_folder, make_config, make_images):
    from training.figures import plot_curve, read_curve, side_by_side
    from training.release import release
    from training.trainer import train

    config = make_config(tmp_path, image_folder, steps=4, **{"generator.scale": 2})
    train(config)
    bench = tmp_path / "Bench5"
    make_images(bench, 2, size=(40, 32), seed=9)
    out = tmp_path / "weights"
    card = release(tmp_path / "run", "tiny_x2", None, [bench], out)

    model = out / "tiny_x2.onnx"
    saved = json.loads((out / "tiny_x2.card.json").read_text())
    assert saved == card and saved["sha256"] == sha256_of(model)
    assert {"bench5_psnr_y", "bench5_ssim_y", "bench5_bicubic_psnr_y", "bench5_bicubic_ssim_y"} <= set(card["metrics"])
    assert len(card["evaluation"]["Bench5"]["per_image"]) == 2
    proto = onnx.load(str(model))
    contract = ModelContract.of_proto(proto)
    assert contract is not None and contract.metrics == card["metrics"] and contract.scale == 2
    assert card["resume"]["step"] == 4 and (out / card["resume"]["file"]).is_file()
    assert "--init-weights model/weights/tiny_x2.resume.weights.h5 --init-step 4" in card["resume"]["command"]
    assert Upscaler.from_file(model, tile=0).upscale(np.zeros((8, 8, 3), np.uint8)).shape == (16, 16, 3)

    steps, psnr, _ = read_curve(out / "tiny_x2.card.json")
    assert steps == [2, 4] and len(psnr) == 2
    assert Image.open(plot_curve(out / "tiny_x2.card.json", tmp_path / "curve.png")).size[0] > 400
    figure = side_by_side([model], next(bench.iterdir()), (0, 0, 16, 16), tmp_path / "cmp.png")
    assert Image.open(tmp_path / "cmp.png").size == (3 * 32 + 20, 32 + 22), "bicubic | model | ground truth"
    assert set(figure) >= {"psnr_y_bicubic", f"psnr_y_{model.stem}"}


def test_wall_time_sums_progress_lines_and_skips_pauses():
    from training.release import _hours_from_log

    lines = [
        "2026-11-25 21:00:00,000 INFO training.trainer: step 50/100 loss 1",
        "2026-11-25 21:30:00,000 INFO training.trainer: step 100/100 loss 1",  # 30 min gap: a pause
        "2026-11-25 21:36:00,000 INFO training.trainer: step 150/100 loss 1",
        "not a progress line",
    ]
    assert _hours_from_log(lines) == pytest.approx(0.1)


def test_gan_resume_file_holds_generator_and_discriminator(tmp_path):
    import numpy as np

    from training.arch import build_discriminator, build_generator
    from training.gan import load_pair, save_pair

    g, d = build_generator(scale=4, filters=8, blocks=1), build_discriminator(32, 4, 0.8)
    save_pair(g, d, tmp_path / "pair.weights.h5")
    g2, d2 = build_generator(scale=4, filters=8, blocks=1), build_discriminator(32, 4, 0.8)
    assert any(not np.array_equal(a, b) for a, b in zip(d.get_weights(), d2.get_weights()))
    load_pair(g2, d2, tmp_path / "pair.weights.h5")
    for a, b in zip(g.get_weights() + d.get_weights(), g2.get_weights() + d2.get_weights()):
        assert np.array_equal(a, b)


def test_the_resume_command_carries_every_setting_the_run_changed(tmp_path):
    from training.config import default_config, merge
    from training.release import resume_command

    config = merge(default_config("gan"), {
        "data.data": "../shared/data/train", "data.extra_data": ["../shared/data/train-extra"],
        "data.hr_size": 64, "data.batch_size": 8, "gan.perceptual": "random-vgg19", "gan.pixel_weight": 0.01,
        "gan.pretrained": "model/weights/srresnet_x4.resume.weights.h5", "steps": 20000, "optim.boundaries": [10000],
    })
    command = resume_command(config, "srgan_x4", "srgan_x4.resume.weights.h5", 1234)
    assert command.startswith("srgan train gan --run-dir runs/srgan_x4 ")
    for flag in ("--data ../shared/data/train", "--extra-data ../shared/data/train-extra", "--hr-size 64",
                 "--batch-size 8", "--perceptual random-vgg19", "--pixel-weight 0.01", "--steps 20000",
                 "--boundaries 10000", "--init-weights model/weights/srgan_x4.resume.weights.h5",
                 "--init-step 1234", "--resume"):
        assert flag in command, flag
    assert "--pretrained" not in command, "a resumed GAN starts from its own weights"


def test_the_resume_command_of_a_run_seeded_from_another_scale_starts_from_its_own_weights():
    """An x2 run seeded from x4 weights (--init-scale 4) resumes from its own x2 weights: no --init-scale."""
    from training.config import default_config, merge
    from training.release import resume_command

    config = merge(default_config("pretrain"), {"generator.scale": 2, "init_scale": 4, "steps": 5000,
                                                "init_weights": "model/weights/srresnet_x4.resume.weights.h5"})
    command = resume_command(config, "srresnet_x2", "srresnet_x2.resume.weights.h5", 5000)
    assert "--scale 2" in command and "--init-weights model/weights/srresnet_x2.resume.weights.h5" in command
    assert "--init-scale" not in command


def test_the_resume_file_of_a_unet_gan_run_reads_its_own_discriminator(tmp_path, make_config):
    """``srgan release`` of a gan run with ``--discriminator unet`` (realworld_gan_x4's) writes its resume file from
    the checkpoint: it builds the discriminator the run's config names, not the SRGAN one (whose fc layer the
    checkpoint does not have: it failed so before)."""
    from training.checkpoint import Checkpointer, RunDir
    from training.gan import GanStage, discriminator_for, load_pair
    from training.release import _save_resume_weights

    config = make_config(tmp_path, tmp_path, stage="gan", **{
        "gan.discriminator": "unet", "gan.d_filters": 4, "gan.perceptual": "none", "gan.pixel_weight": 1.0})
    stage = GanStage(config)
    stage.build()
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    config.save(run.config)
    ckpt = Checkpointer(run, 1, **stage.trackables())
    ckpt.step.assign(7)
    ckpt.save()
    assert _save_resume_weights(run.root, tmp_path / "resume.weights.h5") == 7
    fresh = GanStage(config)
    fresh.build()
    disc = discriminator_for(config)
    assert disc.name == "unet_discriminator"
    load_pair(fresh.generator, disc, tmp_path / "resume.weights.h5")
    for a, b in zip(stage.generator.get_weights() + stage.discriminator.get_weights(),
                    fresh.generator.get_weights() + disc.get_weights()):
        assert np.array_equal(a, b)


def test_the_cards_one_line_gan_loss_names_the_runs_terms():
    """realworld_gan_x4's card said ``vgg54 (block5_conv4 / 12.75) + 0.1 x adversarial`` for a run with the random
    VGG19, an L1 pixel term and the pooled L1: the one-line summary was written for the SRGAN stage only."""
    from training.config import GanConfig
    from training.export import gan_loss_summary

    realworld = GanConfig(perceptual="random-vgg19", pixel_weight=1.0, lowfreq_weight=2.0, adv_weight=0.1)
    assert gan_loss_summary(realworld) == "1 x random-vgg19 + 1 x l1 + 2 x pooled l1 + 0.1 x adversarial"
    srgan = GanConfig(perceptual="vgg54")
    assert gan_loss_summary(srgan) == f"1 x vgg54 ({srgan.vgg_layer} / {srgan.vgg_rescale}) + 0.001 x adversarial"
    assert gan_loss_summary(GanConfig(perceptual="none", pixel_weight=1.0, adv_weight=0.0)) == "1 x l1"


def test_a_pack_carries_the_progress_log_so_the_card_counts_every_segment(tmp_path):
    """The segments before a pack ran on another machine: their progress lines travel in the pack as
    ``train.log`` and the card's wall time sums them with the lines the resumed run writes beside the run
    directory (``runs/<run>.log``); a line in both (packed twice) counts once."""
    from training.release import _wall_hours
    from training.runpack import pack_run, unpack_run

    def progress(hour, minutes):
        return [f"2026-12-0{hour // 24 + 1} {hour % 24:02d}:{m:02d}:00,000 INFO training.trainer: step {m}/9 loss 1"
                for m in minutes]

    run = tmp_path / "runs" / "fast"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "checkpoints" / "ckpt-7.index").write_bytes(b"i")
    (run / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-7"\n')
    first = progress(1, range(0, 31, 5))  # 0.5 h on the first machine
    (tmp_path / "runs" / "fast.log").write_text("\n".join(first + ["a warning that is no progress line"]) + "\n")
    assert _wall_hours(run) == pytest.approx(0.5)
    packed = tmp_path / "fast.run.tar"
    assert "train.log" in pack_run(run, packed)

    moved = tmp_path / "elsewhere" / "runs" / "fast"
    assert unpack_run(packed, moved) == "ckpt-7"
    assert _wall_hours(moved) == pytest.approx(0.5), "the first machine's segment came along"
    second = progress(30, range(0, 16, 5))  # 0.25 h the next day, in the log beside the run
    (moved.parent / "fast.log").write_text("\n".join(second) + "\n")
    assert _wall_hours(moved) == pytest.approx(0.75)
    again = tmp_path / "third" / "runs" / "fast"
    pack_run(moved, packed)
    unpack_run(packed, again)
    (again.parent / "fast.log").write_text("\n".join(second) + "\n")  # the same lines kept beside it too
    assert _wall_hours(again) == pytest.approx(0.75)
