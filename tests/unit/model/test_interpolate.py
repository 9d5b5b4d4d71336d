"""Detail control: weight interpolation of a PSNR model and its GAN fine-tune (real tiny ONNX files)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.tiny_models import make_conv_model, make_srresnet_model
from core.catalog.catalog import ModelCatalog
from core.catalog.load import build_upscaler
from core.catalog.registry import DeployRefused, Registry
from core.settings import Settings
from model.engine import Upscaler
from model.errors import InvalidParameter
from model.interpolate import PairMismatch, check_pair, interpolate_models, round_detail
from tests.utils.models import publish_checked
from worker.engines import EngineCache

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    base = make_conv_model(folder / "base.onnx", seed=0, name="psnr")
    target = make_conv_model(folder / "target.onnx", seed=1, name="gan")
    other = make_srresnet_model(folder / "other.onnx")
    return base, target, other


@pytest.fixture
def image():
    return np.random.default_rng(3).integers(0, 256, (20, 28, 3), dtype=np.uint8)


def _run(path, img, **kw):
    return Upscaler.from_file(path, backend="onnxruntime", threads=1, tile=0, overlap=0, **kw)._run([img])[0]


@pytest.mark.parametrize(("value", "rounded"), [(0, 0.0), (0.33, 0.35), (0.97, 0.95), (1, 1.0), ("0.5", 0.5)])
def test_detail_is_rounded_to_a_twentieth(value, rounded):
    assert round_detail(value) == rounded


@pytest.mark.parametrize("value", [-0.1, 1.01, float("nan"), "much"])
def test_detail_outside_0_1_is_refused(value):
    with pytest.raises(InvalidParameter, match="detail"):
        round_detail(value)


def test_endpoints_are_the_two_models_and_the_middle_is_neither(pair, image, tmp_path):
    base, target, _ = pair
    outs = {}
    for a in (0.0, 0.5, 1.0):
        path = tmp_path / f"blend{a}.onnx"
        import onnx

        onnx.save(interpolate_models(base, target, a), str(path))
        outs[a] = _run(path, image)
    base_out, target_out = _run(base, image), _run(target, image)
    assert np.abs(outs[0.0] - base_out).max() <= 1e-3
    assert np.abs(outs[1.0] - target_out).max() <= 1e-3
    assert np.abs(outs[0.5] - base_out).max() > 1 and np.abs(outs[0.5] - target_out).max() > 1


def test_a_blend_records_both_models_and_the_detail(pair):
    import json

    base, target, _ = pair
    proto = interpolate_models(base, target, 0.25)
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["srgan_detail"])
    assert meta == {"detail": 0.25, "detail_base": {"name": "psnr", "version": "1"},
                    "detail_target": {"name": "gan", "version": "1"}}


def test_a_different_network_is_refused_with_the_reason(pair):
    base, _, other = pair
    with pytest.raises(PairMismatch, match="different networks"):
        check_pair(base, other)


def _card_with_base(path, base):
    import json

    path.with_name(f"{path.stem}.card.json").write_text(json.dumps({"detail_base": base}))
    return path


def test_deploy_refuses_a_gan_model_that_cannot_blend_with_its_base(pair, tmp_path):
    base, _, _ = pair
    registry = Registry(tmp_path / "models")
    publish_checked(registry, base, name="psnr")
    bad = _card_with_base(make_srresnet_model(tmp_path / "bad.onnx"), "psnr")
    with pytest.raises(DeployRefused, match="cannot serve detail with psnr.*different networks"):
        publish_checked(registry, bad, name="gan")
    assert not registry.has("gan")


def test_the_worker_cache_builds_each_detail_once_and_the_cli_path_gives_the_same_pixels(pair, image, tmp_path):
    base, target, _ = pair
    registry = Registry(tmp_path / "models")
    publish_checked(registry, base, name="psnr")
    copy = tmp_path / "t.onnx"
    copy.write_bytes(target.read_bytes())
    publish_checked(registry, _card_with_base(copy, "psnr"), name="gan")
    settings = Settings(_env_file=None, models_dir=registry.root, model="psnr", backend="onnxruntime", threads=1,
                        tile=0, overlap=0, model_refresh_s=3600)
    cache = EngineCache(settings, None)
    engine, blend = cache.get_blend("gan", 0.5)
    assert cache.get("gan", 0.52) is engine, "0.52 rounds to 0.5: the same network"
    assert blend.describe() == {"detail": 0.5, "detail_base": "psnr:1", "detail_target": "gan:1"}
    assert cache.get("gan", 0.0) is not engine
    local = build_upscaler(settings, ModelCatalog(settings).blend("gan", 0.5))
    assert np.array_equal(engine.upscale(image), local.upscale(image))
    assert np.array_equal(cache.get("gan", 0.0).upscale(image), cache.get("psnr").upscale(image))
    with pytest.raises(InvalidParameter, match="no detail control"):
        cache.get("psnr", 0.5)


def test_shipped_pairs_are_seeded_base_first_and_checked(pair, tmp_path):
    import shutil

    base, target, other = pair
    shipped = tmp_path / "weights"
    shipped.mkdir()
    shutil.copy(target, shipped / "a_gan.onnx")  # sorts before its base by name
    _card_with_base(shipped / "a_gan.onnx", "z_psnr")
    shutil.copy(base, shipped / "z_psnr.onnx")
    added = Registry(tmp_path / "good").seed(shipped)
    assert [v.name for v in added] == ["z_psnr", "a_gan"]
    shutil.copy(other, shipped / "z_psnr.onnx")  # a base of another architecture
    with pytest.raises(DeployRefused, match="cannot serve detail with z_psnr"):
        Registry(tmp_path / "bad").seed(shipped)
