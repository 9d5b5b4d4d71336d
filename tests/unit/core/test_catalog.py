"""The models the API offers, read from the ONNX contract without ONNX Runtime."""

from __future__ import annotations

import pytest

from core.catalog import describe_model_file, offered_models, select_model
from core.settings import Settings
from model.errors import InvalidParameter, ModelError
from tests.utils.tiny_models import make_nearest_model

pytestmark = pytest.mark.unit


@pytest.fixture
def settings(tmp_path):
    return Settings(_env_file=None, model=str(make_nearest_model(tmp_path / "n.onnx", scale=4)))


def test_contract_gives_name_version_scale(settings):
    (info,) = offered_models(settings)
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
    with pytest.raises(ModelError):
        offered_models(Settings(_env_file=None, model=str(tmp_path / "gone.onnx")))
