"""The models the API offers, read from the ONNX contract without ONNX Runtime."""

from __future__ import annotations

import pytest

from core.catalog import describe_model_file, offered_models, select_model
from core.settings import Settings
from model.errors import InvalidParameter, ModelError
from model.locate import shipped_models
from tests.utils.tiny_models import make_nearest_model

pytestmark = pytest.mark.unit


@pytest.fixture
def settings(tmp_path):
    return Settings(_env_file=None, model=str(make_nearest_model(tmp_path / "n.onnx", scale=4)),
                    models_dir=tmp_path / "models")


def ours(models):
    """Leave out the shipped default, which every registry holds from the start (when the package ships it)."""
    return [m for m in models if m.name not in shipped_models()]


def test_contract_gives_name_version_scale(settings):
    (info,) = ours(offered_models(settings))
    assert (info.name, info.version, info.scale, info.ref, info.active) == ("nearest", "1", 4, "nearest:1", True)


def test_file_without_contract_is_named_by_its_stem(tmp_path):
    info = describe_model_file(make_nearest_model(tmp_path / "foreign.onnx", with_contract=False))
    assert (info.name, info.version, info.scale) == ("foreign", "", None)


def test_selection_by_name_version_and_scale(settings):
    assert select_model(settings, model=None, scale=None).name == "nearest"
    assert select_model(settings, model="nearest:1", scale=4).name == "nearest"
    assert select_model(settings, model=None, scale=2).scale == 4, "other scales are resampled"
    for bad in ("other", "nearest:2"):
        with pytest.raises(InvalidParameter, match="offered: nearest:1"):
            select_model(settings, model=bad, scale=None)


def test_missing_model_is_a_model_error(tmp_path):
    settings = Settings(_env_file=None, model=str(tmp_path / "gone.onnx"), models_dir=tmp_path / "models")
    with pytest.raises(ModelError, match="not found"):
        select_model(settings, model=None, scale=None)


@pytest.mark.skipif(not shipped_models(), reason="no model ships in model/weights yet")
def test_the_shipped_default_is_in_every_registry_from_the_start(tmp_path):
    settings = Settings(_env_file=None, models_dir=tmp_path / "models")
    (default,) = [m for m in offered_models(settings) if m.default]
    assert default.name == settings.model and default.source == "registry" and default.active
    assert default.path.parent.parent == tmp_path / "models" / settings.model


# --- with the registry -----------------------------------------------------------
@pytest.fixture
def registry_settings(tmp_path):
    from model.deploy import deploy_model
    from model.registry import Registry

    registry = Registry(tmp_path / "models")
    deploy_model(registry, make_nearest_model(tmp_path / "v1.onnx", scale=4), name="sr", version="v1")
    deploy_model(registry, make_nearest_model(tmp_path / "v2.onnx", scale=4, name="other"), name="sr", version="v2")
    deploy_model(registry, make_nearest_model(tmp_path / "x2.onnx", scale=2), name="sr2", version="1")
    return Settings(_env_file=None, models_dir=tmp_path / "models", model="sr")


def test_registry_versions_are_offered_with_the_active_and_default_marked(registry_settings):
    offered = {m.ref: (m.active, m.default, m.scale, m.source) for m in ours(offered_models(registry_settings))}
    assert offered == {"sr:v1": (False, False, 4, "registry"), "sr:v2": (True, True, 4, "registry"),
                       "sr2:1": (True, False, 2, "registry")}


def test_names_resolve_to_the_active_version_and_name_version_pins(registry_settings):
    from core.catalog import resolve_spec

    assert resolve_spec(registry_settings, None).ref == "sr:v2"
    assert resolve_spec(registry_settings, "sr").ref == "sr:v2"
    assert resolve_spec(registry_settings, "sr:v1").ref == "sr:v1"
    assert resolve_spec(registry_settings, "sr:v1").path.parts[-3:] == ("sr", "v1", "model.onnx")
    with pytest.raises(ModelError, match="versions of sr: v1, v2"):
        resolve_spec(registry_settings, "sr:v9")


def test_selection_uses_the_registry(registry_settings):
    assert select_model(registry_settings, model=None, scale=None).ref == "sr:v2"
    assert select_model(registry_settings, model="sr:v1", scale=None).ref == "sr:v1"
    assert select_model(registry_settings, model=None, scale=2).ref == "sr2:1", "a model made for x2 is preferred"
    assert select_model(registry_settings, model="sr", scale=2).ref == "sr:v2", "a named model is resampled"
    with pytest.raises(InvalidParameter, match=r"offered: sr:v1, sr:v2 \(active\), sr2:1 \(active\)"):
        select_model(registry_settings, model="sr:v3", scale=None)


def test_the_configured_file_is_offered_beside_the_registry(registry_settings, tmp_path):
    settings = registry_settings.model_copy(update={"model": str(make_nearest_model(tmp_path / "f.onnx"))})
    offered = ours(offered_models(settings))
    assert offered[0].source == "file" and offered[0].default and offered[0].ref == "nearest:1"
    assert [m.ref for m in offered[1:]] == ["sr:v1", "sr:v2", "sr2:1"]
    assert select_model(settings, model="nearest", scale=None).source == "file"
