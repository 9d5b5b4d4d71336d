"""The probe at deploy and load time: a model whose contract does not match it is refused, naming what looks wrong;
a contract that declares 0..1 and NCHW makes the engine adapt."""

from __future__ import annotations

import numpy as np
import pytest

from bench.tiny_models import make_conv_model, make_foreign_style_model, make_nearest_model
from core.catalog.catalog import ModelCatalog
from core.catalog.checks import EngineInspector, check_model_file
from core.catalog.publish import Publisher
from core.catalog.registry import DeployRefused, Registry
from core.settings import Settings
from model.engine import Upscaler
from model.errors import ModelError
from model.probe import judge_probe, probe_image
from model.quality import bicubic_upscale
from tests.utils.models import publish_checked

pytestmark = pytest.mark.unit


def _nearest(lr: np.ndarray, scale: int) -> np.ndarray:
    return lr.repeat(scale, 0).repeat(scale, 1)


def test_a_declared_unit_range_nchw_model_runs_right(tmp_path):
    model = make_foreign_style_model(tmp_path / "realesrgan_style.onnx", scale=2, with_contract=True)
    up = Upscaler.from_file(model, backend="onnxruntime", tile=0)
    lr = probe_image()
    assert (up.contract.layout, up.contract.value_range) == ("NCHW", (0.0, 1.0))
    assert np.abs(up.upscale(lr).astype(int) - _nearest(lr, 2)).max() <= 1
    assert check_model_file(model).scale == 2, "and it passes the deploy check"


def test_an_undeclared_unit_range_model_is_refused_at_deploy_naming_the_range(tmp_path):
    model = make_foreign_style_model(tmp_path / "unit.onnx", scale=2)
    with pytest.raises(DeployRefused, match=r"nearly black.*0\.\.1.*--value-range 0 1"):
        check_model_file(model, scale=2)


def test_an_undeclared_unit_range_model_is_refused_at_load(tmp_path):
    """`srgan upscale --model foreign.onnx` gave black images."""
    model = make_foreign_style_model(tmp_path / "unit.onnx", scale=2)
    with pytest.raises(ModelError, match=r"no srgan contract.*NCHW.*0\.\.255.*nearly black"):
        Upscaler.from_file(model, backend="onnxruntime", tile=0)
    up = Upscaler.from_file(model, backend="onnxruntime", tile=0, value_range=(0.0, 1.0))
    lr = probe_image()
    assert np.abs(up.upscale(lr).astype(int) - _nearest(lr, 2)).max() <= 1, "declared: the engine adapts"


def test_a_bgr_model_is_refused_naming_the_channel_order(tmp_path):
    model = make_foreign_style_model(tmp_path / "bgr.onnx", scale=2, unit_range=False, layout="NHWC", bgr=True)
    with pytest.raises(DeployRefused, match="colours look swapped.*BGR"):
        check_model_file(model, scale=2)


def test_weak_but_sane_models_pass(tmp_path):
    """Lenient: the nearest and random-conv test models (far from good) are not refused."""
    for model in (make_nearest_model(tmp_path / "n.onnx"), make_conv_model(tmp_path / "c.onnx")):
        assert check_model_file(model).scale == 4
    lr = probe_image()
    assert judge_probe(bicubic_upscale(lr, 4), lr, 4) is None
    assert "negative of the image" in (judge_probe(255 - bicubic_upscale(lr, 4), lr, 4) or "")
    assert "far from the image" in (judge_probe(np.full((80, 112, 3), 250, np.uint8), lr, 4) or "")


def test_deploy_can_declare_the_contract_of_a_foreign_file(tmp_path):
    """`srgan deploy --layout NCHW --value-range 0 1`: the published copy carries the contract; the file is kept."""
    model = make_foreign_style_model(tmp_path / "unit.onnx", scale=2)
    before = model.read_bytes()
    publisher = Publisher(ModelCatalog(Settings(_env_file=None, models_dir=tmp_path / "models")), EngineInspector())
    with pytest.raises(DeployRefused, match="nearly black"):
        publisher.publish(model, "unit", scale=2)
    done = publisher.publish(model, "unit", scale=2, layout="NCHW", value_range=(0.0, 1.0))
    assert model.read_bytes() == before
    up = Upscaler.from_file(done.version.path, backend="onnxruntime", tile=0)
    lr = probe_image()
    assert np.abs(up.upscale(lr).astype(int) - _nearest(lr, 2)).max() <= 1
    assert Registry(tmp_path / "models").get("unit").scale == 2
    publish_checked(Registry(tmp_path / "other"), done.version.path, name="again")  # its contract now says it all
