"""`training.export.publish_export`: an export goes straight into the registry (no TensorFlow needed)."""

from __future__ import annotations

import json

import pytest

from core.settings import get_settings
from model.registry import DeployRefused, Registry, sha256_of
from tests.utils.tiny_models import make_nearest_model, with_declared_scale

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
    """A file and the card.json beside it, as ``srgan export`` leaves them."""
    folder.mkdir(parents=True)
    path = model(folder / "model.onnx")
    (folder / "card.json").write_text(json.dumps({"name": "run1", "version": "step-200", "scale": 4,
                                                  "metrics": {"set5_psnr_y": 28.1}, "sha256": sha256_of(path),
                                                  "onnx": {"file": "model.onnx", "opset": 17}}))
    return path


def test_publish_export_deploys_with_the_card(models_dir, tmp_path):
    from training.export import publish_export

    path = exported(tmp_path / "out", lambda p: make_nearest_model(p, scale=4))
    told = publish_export(path, "srresnet_x4")
    assert "published srresnet_x4:step-200" in told and "no Redis configured" in told
    active = Registry(models_dir).get("srresnet_x4")
    assert active.version == "step-200" and active.metrics == {"set5_psnr_y": 28.1}
    assert active.card["registry"]["source"] == f"srgan export: {path}"


def test_publish_export_refuses_a_bad_export(models_dir, tmp_path):
    from training.export import publish_export

    path = exported(tmp_path / "out", lambda p: with_declared_scale(make_nearest_model(p, scale=2), p, 4))
    with pytest.raises(DeployRefused, match="declares x4"):
        publish_export(path, "srresnet_x4")
    assert not Registry(models_dir).has("srresnet_x4")
