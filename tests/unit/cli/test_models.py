"""`srgan deploy`, `srgan models`, `srgan rollback` as a new user meets them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.tiny_models import make_conv_model, make_nearest_model, make_srresnet_model
from cli.main import main
from core.catalog.catalog import ModelCatalog
from core.catalog.registry import Registry
from core.settings import get_settings
from model.contract import ModelContract, Tiling

pytestmark = pytest.mark.unit


@pytest.fixture
def registry(tmp_path, monkeypatch) -> Iterator[Registry]:
    for key in ("SRGAN_REDIS_URL", "SRGAN_MODELS_DIR", "SRGAN_DATA_DIR", "SRGAN_MODEL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SRGAN_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield Registry(tmp_path / "data" / "models")
    get_settings.cache_clear()


@pytest.fixture
def bench_set(tmp_path) -> Path:
    """A tiny "Set5": smooth photos-like images, where nearest upscaling beats a random network by far."""
    folder = tmp_path / "Set5"
    folder.mkdir()
    y, x = np.mgrid[0:48, 0:64].astype(np.float32)
    for i in range(2):
        img = np.stack([x * 3 + i * 20, y * 4, (x + y) * 2], axis=-1)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


def test_deploy_refuses_a_worse_model_on_the_bench_set_unless_forced(registry, tmp_path, bench_set, capsys):
    good, bad = make_nearest_model(tmp_path / "good.onnx"), make_conv_model(tmp_path / "bad.onnx")
    assert main(["deploy", str(good), "--name", "sr", "--version", "v1"]) == 0
    capsys.readouterr()
    assert main(["deploy", str(bad), "--name", "sr", "--version", "v2", "--eval-data", str(bench_set)]) == 1
    err = capsys.readouterr().err
    assert "worse than the active sr:v1" in err and "set5_psnr_y" in err and "--force" in err
    assert "the active version of sr is still v1" in err and registry.active_version("sr") == "v1"
    assert main(["deploy", str(bad), "--name", "sr", "--version", "v2", "--eval-data", str(bench_set),
                 "--force"]) == 0
    assert "(worse; --force)" in capsys.readouterr().out and registry.active_version("sr") == "v2"
    assert set(registry.get("sr", "v2").metrics) == {"set5_psnr_y", "set5_ssim_y"}, "measured metrics are kept"


def test_deploy_compares_card_metrics_of_the_same_set(registry, tmp_path, capsys):
    first, second = make_nearest_model(tmp_path / "a.onnx"), make_nearest_model(tmp_path / "b.onnx")
    (tmp_path / "a.card.json").write_text(json.dumps({"metrics": {"set5_psnr_y": 31.57}}))
    (tmp_path / "b.card.json").write_text(json.dumps({"metrics": {"set5_psnr_y": 28.43}}))
    assert main(["deploy", str(first), "--name", "sr"]) == 0
    assert main(["deploy", str(second), "--name", "sr", "--version", "2"]) == 1
    assert "set5_psnr_y 28.43 dB vs 31.57" in capsys.readouterr().err


def test_a_name_other_than_the_exported_one_is_a_warning(registry, tmp_path, capsys):
    assert main(["deploy", str(make_nearest_model(tmp_path / "n.onnx", name="run1")), "--name", "sr"]) == 0
    assert "exported as 'run1'; publishing it as 'sr'" in capsys.readouterr().err


def test_rollback_to_any_version_and_the_hint(registry, tmp_path, capsys):
    for v in ("v1", "v2", "v3"):
        assert main(["deploy", str(make_nearest_model(tmp_path / f"{v}.onnx")), "--name", "sr", "--version", v]) == 0
    capsys.readouterr()
    assert main(["rollback", "sr", "--to", "v1"]) == 0
    assert "active version v3 -> v1" in capsys.readouterr().out
    assert main(["deploy", str(make_nearest_model(tmp_path / "solo.onnx")), "--name", "solo"]) == 0
    assert main(["rollback", "solo"]) == 1
    assert "srgan rollback solo --to VERSION" in capsys.readouterr().err


def test_models_is_a_readable_table_with_the_data_folder(registry, tmp_path, capsys):
    model = make_nearest_model(tmp_path / "m.onnx")
    (tmp_path / "m.card.json").write_text(json.dumps({"metrics": {
        "set5_psnr_y": 31.565812345, "set5_ssim_y": 0.887712345, "set5_bicubic_psnr_y": 28.4293,
        "set14_psnr_y": 28.2075, "set14_ssim_y": 0.7721, "set14_bicubic_psnr_y": 26.09, "bsd100_niqe": 5.123456}}))
    assert main(["deploy", str(model), "--name", "sr"]) == 0
    capsys.readouterr()
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    header, *rows = out.split("\n\n")[0].splitlines()
    assert header.split() == ["NAME", "VERSION", "ACTIVE", "SCALE", "SET5", "SET14", "NIQE", "NIQE-HR", "NIQE-BIC",
                              "PRECISION", "INT8-COST", "PUBLISHED"]  # the shipped srgan_x4 has reference NIQEs
    (row,) = [r for r in rows if r.startswith("sr ")]
    assert "31.57 dB" in row and "28.21 dB" in row and "5.12" in row and "bicubic" not in row
    assert max(len(line) for line in out.splitlines()[: len(rows) + 1]) < 140
    cells = {r.split()[0]: r for r in rows}  # int8 cost, mean dB on Set5/Set14, from the shipped cards
    assert " 0.032/0.021 " in cells["srresnet_x4"] and " 0.003/<0 " in cells["realworld_x4"], "<0: int8 scored higher"
    assert f"registry: {registry.root.resolve()}" in out
    assert main(["models", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    (sr,) = [m for m in listing["models"] if m["name"] == "sr"]
    assert sr["metrics"]["set5_psnr_y"] == 31.5658 and sr["metrics"]["bsd100_niqe"] == 5.1235, "rounded"


def test_models_shows_the_models_own_niqe_and_labels_the_references(registry, tmp_path, capsys):
    model = make_nearest_model(tmp_path / "g.onnx")
    (tmp_path / "g.card.json").write_text(json.dumps({"metrics": {  # as the shipped srgan_x4's card has them
        "set14_psnr_y": 27.0522, "set14_niqe": 4.3586, "set14_hr_niqe": 4.8391, "set14_bicubic_niqe": 7.7269,
        "set5_niqe": 5.6308, "set5_hr_niqe": 5.1043}}))
    assert main(["deploy", str(model), "--name", "gan"]) == 0
    capsys.readouterr()
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    header, *rows = out.split("\n\n")[0].splitlines()
    columns = header.split()
    assert columns[columns.index("NIQE"):][:3] == ["NIQE", "NIQE-HR", "NIQE-BIC"]
    (row,) = [r for r in rows if r.startswith("gan ")]
    cells = row.split()
    at = columns.index("NIQE") + 1  # the ACTIVE cell "active" is one word here, the SET5 cell "-", dB cells two
    assert cells[at: at + 3] == ["4.36", "4.84", "7.73"], row  # the model's own NIQE, not the ground truth's
    assert "ground-truth" in out


def test_deploy_detail_base_is_kept_by_the_published_versions_and_a_rollback(registry, tmp_path, capsys):
    """`srgan deploy --detail-base`: a retrained GAN model keeps its detail control, and a rollback returns to a
    version that has its own."""
    assert main(["deploy", str(make_conv_model(tmp_path / "psnr.onnx", seed=0, name="psnr")), "--name", "psnr"]) == 0
    for version, seed in (("v1", 1), ("v2", 2)):
        gan = make_conv_model(tmp_path / f"gan{seed}.onnx", seed=seed, name="gan")
        assert main(["deploy", str(gan), "--name", "gan", "--version", version, "--detail-base", "psnr"]) == 0
    assert registry.get("gan").version == "v2" and registry.get("gan").detail_base == "psnr"
    assert main(["rollback", "gan"]) == 0
    assert registry.get("gan").version == "v1" and registry.get("gan").detail_base == "psnr"
    blend = ModelCatalog(get_settings()).blend("gan", 0.5)
    assert (blend.target.ref, blend.base.ref if blend.base else None) == ("gan:v1", "psnr:1")


def test_deploy_refuses_a_detail_base_whose_network_differs(registry, tmp_path, capsys):
    assert main(["deploy", str(make_conv_model(tmp_path / "psnr.onnx", seed=0, name="psnr")), "--name", "psnr"]) == 0
    other = make_srresnet_model(tmp_path / "other.onnx")
    assert main(["deploy", str(other), "--name", "gan", "--detail-base", "psnr"]) == 1
    assert "cannot serve detail with psnr" in capsys.readouterr().err
    assert not registry.has("gan")


GAN_METRICS = {"set14_psnr_y": 27.05, "set14_bicubic_psnr_y": 26.09, "set14_niqe": 4.36, "set14_max_color_shift": 1.33}
"""srgan_x4's card on Set14, the figures a GAN model's gate reads."""


def _gan(tmp_path, seed, **metrics):
    """A GAN-style candidate (blends with `psnr`) whose card says ``metrics``."""
    path = make_conv_model(tmp_path / f"gan{seed}.onnx", seed=seed, name="gan")
    path.with_name(f"gan{seed}.card.json").write_text(json.dumps({"detail_base": "psnr",
                                                                  "metrics": {**GAN_METRICS, **metrics}}))
    return str(path)


def test_a_gan_model_is_gated_on_niqe_and_floors_not_on_psnr_alone(registry, tmp_path, capsys):
    assert main(["deploy", str(make_conv_model(tmp_path / "psnr.onnx", seed=0, name="psnr")), "--name", "psnr"]) == 0
    assert main(["deploy", _gan(tmp_path, 1), "--name", "gan", "--version", "v1"]) == 0
    capsys.readouterr()
    # 0.5 dB lower PSNR-Y than v1 (the PSNR gate's 0.2 dB would refuse it) but a better NIQE: it passes
    assert main(["deploy", _gan(tmp_path, 2, set14_psnr_y=26.55, set14_niqe=4.1), "--name", "gan",
                 "--version", "v2"]) == 0
    out = capsys.readouterr().out
    assert "GAN gate against the active gan:v1: set14 NIQE 4.10 vs 4.36" in out
    assert registry.active_version("gan") == "v2"
    refused = {
        "v3": ({"set14_niqe": 4.4}, "set14 NIQE 4.40 is worse than 4.10 by more than 0.2"),
        "v4": ({"set14_psnr_y": 25.9}, "set14 PSNR-Y 25.90 dB is below bicubic's 26.09"),
        "v5": ({"set14_niqe": 4.1, "set14_max_color_shift": 4.2}, "set14 colour shift 4.20 levels is over 3"),
    }
    for seed, (version, (metrics, reason)) in enumerate(refused.items(), start=3):
        assert main(["deploy", _gan(tmp_path, seed, **metrics), "--name", "gan", "--version", version]) == 1
        err = capsys.readouterr().err
        assert reason in err and "the active version of gan is still v2" in err, err
    assert registry.active_version("gan") == "v2"
    assert main(["deploy", _gan(tmp_path, 6, set14_niqe=4.4), "--name", "gan", "--version", "v6", "--force"]) == 0
    assert "(fails; --force)" in capsys.readouterr().out and registry.active_version("gan") == "v6"


def test_a_gan_gate_on_eval_data_measures_niqe_flat_regions_and_colour_for_both(registry, tmp_path, capsys):
    """With --eval-data a GAN candidate and the active version are measured as the gate reads them."""
    from bench.data import training_photo

    bench = tmp_path / "Set5"
    bench.mkdir()
    photo = training_photo(0)
    for i in range(2):
        Image.fromarray(photo[i * 100:i * 100 + 128, :128]).save(bench / f"{i}.png")
    assert main(["deploy", str(make_conv_model(tmp_path / "psnr.onnx", seed=0, name="psnr")), "--name", "psnr"]) == 0
    first = make_conv_model(tmp_path / "g1.onnx", seed=1, name="gan")
    assert main(["deploy", str(first), "--name", "gan", "--version", "v1", "--detail-base", "psnr"]) == 0
    capsys.readouterr()
    second = make_conv_model(tmp_path / "g2.onnx", seed=2, name="gan")
    assert main(["deploy", str(second), "--name", "gan", "--version", "v2", "--detail-base", "psnr",
                 "--eval-data", str(bench), "--force"]) == 0
    out = capsys.readouterr().out
    assert "GAN gate against the active gan:v1: set5 NIQE" in out and "flat-region error" in out, out
    measured = registry.get("gan", "v2").metrics
    assert {"set5_psnr_y", "set5_bicubic_psnr_y", "set5_niqe", "set5_max_color_shift",
            "set5_flat_error"} <= set(measured)
    assert measured["set5_psnr_y"] < measured["set5_bicubic_psnr_y"], "a random network is below bicubic"


def test_a_cards_tiling_reaches_the_published_contract_and_the_listing(registry, tmp_path, capsys):
    """A card whose contract states tiling (what `srgan import` writes for Real-ESRGAN's models): the published
    copy's contract carries it (the engine reads the file), `srgan models` shows it in a TILING column (only when
    some model states one) and --json under `tiling`; a card without it changes nothing."""
    model = make_nearest_model(tmp_path / "plain.onnx")
    assert main(["deploy", str(model), "--name", "plain"]) == 0
    capsys.readouterr()
    assert main(["models"]) == 0
    assert "TILING" not in capsys.readouterr().out
    (tmp_path / "m.card.json").write_text(json.dumps({"contract": {"tiling": {"min_overlap": 24, "pre_pad": 10}}}))
    assert main(["deploy", str(make_nearest_model(tmp_path / "m.onnx")), "--name", "tiled"]) == 0
    assert "declared the card's tiling (min_overlap 24, pre_pad 10)" in capsys.readouterr().out
    contracts = {name: ModelContract.read(registry.get(name).path) for name in ("tiled", "plain")}
    assert contracts["tiled"] is not None and contracts["tiled"].tiling == Tiling(min_overlap=24, pre_pad=10)
    assert contracts["plain"] is not None and contracts["plain"].tiling == Tiling()
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    header, *rows = out.split("\n\n")[0].splitlines()
    columns = header.split()
    (tiled,) = [r.split() for r in rows if r.startswith("tiled ")]
    (plain,) = [r.split() for r in rows if r.startswith("plain ")]
    assert "overlap>=24,pad=10" in tiled and "-" in plain and "TILING" in columns
    assert "TILING: what the model needs" in out
    assert main(["models", "--json"]) == 0
    listing = {m["name"]: m for m in json.loads(capsys.readouterr().out)["models"]}
    assert listing["tiled"]["tiling"] == {"min_overlap": 24, "pre_pad": 10} and listing["plain"]["tiling"] is None
