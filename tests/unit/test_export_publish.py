"""`srgan export --publish`: an export goes into the registry through the publish of `srgan deploy`
(``cli.models.publish_and_report``; no TensorFlow needed)."""

from __future__ import annotations

import json

import pytest

from bench.tiny_models import make_nearest_model, with_declared_scale
from core.catalog.registry import Registry, sha256_of
from core.catalog.shipped import shipped_models
from core.settings import get_settings

pytestmark = pytest.mark.unit


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    for key in ("SRGAN_REDIS_URL", "SRGAN_MODELS_DIR", "SRGAN_DATA_DIR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SRGAN_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("SRGAN_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "models"
    get_settings.cache_clear()


def exported(folder, model):
    """A file and the card beside it, as ``srgan export`` leaves them."""
    folder.mkdir(parents=True)
    path = model(folder / "model.onnx")
    (folder / "model.card.json").write_text(json.dumps({"name": "run1", "version": "step-200", "scale": 4,
                                                  "metrics": {"set5_psnr_y": 28.1}, "sha256": sha256_of(path),
                                                  "onnx": {"file": "model.onnx", "opset": 17}}))
    return path


def test_publish_export_deploys_with_the_card(models_dir, tmp_path, capsys):
    from cli.models import publish_and_report

    path = exported(tmp_path / "out", lambda p: make_nearest_model(p, scale=4))
    assert publish_and_report(None, path, "mine", source=f"srgan export: {path}") == 0
    told = capsys.readouterr()
    assert "published mine:step-200" in told.out and "no Redis configured" in told.out
    assert "exported as 'run1'" in told.err, "the export's --name differs from the published name: a warning"
    active = Registry(models_dir).get("mine")
    assert active.version == "step-200" and active.metrics == {"set5_psnr_y": 28.1}
    assert active.card["registry"]["source"] == f"srgan export: {path}"


def test_publish_export_refuses_a_bad_export(models_dir, tmp_path, capsys):
    from cli.models import publish_and_report

    path = exported(tmp_path / "out", lambda p: with_declared_scale(make_nearest_model(p, scale=2), p, 4))
    assert publish_and_report(None, path, "mine") == 1
    assert "declares x4" in capsys.readouterr().err
    assert not Registry(models_dir).has("mine")


@pytest.mark.skipif(not shipped_models(), reason="no model ships in model/weights")
def test_a_worse_export_is_refused_unless_forced(models_dir, tmp_path, capsys):
    """A 40-step model scoring like bicubic on Set5 was activated over the shipped one without a word."""
    from cli.models import publish_and_report

    path = exported(tmp_path / "out", lambda p: make_nearest_model(p, scale=4))
    assert publish_and_report(None, path, "srresnet_x4") == 1
    err = capsys.readouterr().err
    assert "worse than the active srresnet_x4" in err and "set5_psnr_y 28.10 dB" in err and "--force" in err
    shipped = Registry(models_dir).get("srresnet_x4")
    assert shipped.card["registry"]["source"].startswith("shipped: "), "the active version stays"
    assert publish_and_report(None, path, "srresnet_x4", force=True) == 0
    assert Registry(models_dir).get("srresnet_x4").version == "step-200"
