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
from model.interpolate import PairMismatch, check_pair, interpolate_models
from model.knobs import round_detail
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


def test_a_four_way_blend_is_bilinear_in_the_weights(tmp_path, image):
    """denoise x detail: four models of one family; the blend's weights are the bilinear mix of theirs."""
    import onnx
    from onnx import numpy_helper

    from model.interpolate import blend_models

    corners = [make_conv_model(tmp_path / f"m{i}.onnx", seed=10 + i, name=f"m{i}") for i in range(4)]
    t, n = 0.3, 0.6
    coefs = [(1 - t) * (1 - n), t * (1 - n), (1 - t) * n, t * n]
    proto = blend_models(list(zip(corners, coefs)))
    weights = [{w.name: numpy_helper.to_array(w) for w in onnx.load(str(c)).graph.initializer} for c in corners]
    for w in proto.graph.initializer:
        expected = sum(c * ws[w.name].astype(np.float64) for c, ws in zip(coefs, weights))
        assert np.allclose(numpy_helper.to_array(w), expected, atol=1e-6)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert '"weight": 0.42' in meta["srgan_blend"]
    # a blend whose single part has weight 1 is that model
    path = tmp_path / "one.onnx"
    onnx.save(blend_models([(corners[2], 1.0)]), str(path))
    assert np.abs(_run(path, image) - _run(corners[2], image)).max() <= 1e-3
    with pytest.raises(ValueError, match="add up"):
        blend_models([(corners[0], 0.5), (corners[1], 0.4)])
    with pytest.raises(PairMismatch):
        blend_models([(make_srresnet_model(tmp_path / "other.onnx"), 0.5), (corners[0], 0.5)])


@pytest.mark.parametrize("value", [-0.1, 1.5, float("inf"), "strong"])
def test_denoise_outside_0_1_is_refused_naming_it(value):
    from model.knobs import round_denoise

    with pytest.raises(InvalidParameter, match="^denoise must"):
        round_denoise(value)


def _card(path, **fields):
    import json

    path.with_name(f"{path.stem}.card.json").write_text(json.dumps(fields))
    return path


@pytest.fixture
def family(tmp_path):
    """Four models of one family in a registry: clean psnr/gan and real-world psnr/gan (tiny conv nets)."""
    registry = Registry(tmp_path / "models")
    files = {name: make_conv_model(tmp_path / f"{name}.onnx", seed=20 + i, name=name)
             for i, name in enumerate(["psnr", "gan", "rw", "rw_gan"])}
    publish_checked(registry, files["psnr"], name="psnr")
    publish_checked(registry, _card(files["gan"], detail_base="psnr"), name="gan")
    publish_checked(registry, _card(files["rw"], denoise_base="psnr"), name="rw")
    publish_checked(registry, _card(files["rw_gan"], detail_base="rw", denoise_base="gan"), name="rw_gan")
    settings = Settings(_env_file=None, models_dir=registry.root, model="psnr", backend="onnxruntime", threads=1,
                        tile=0, overlap=0, model_refresh_s=3600)
    return settings, files


def _jpeg_image(quality):
    import io

    from model.images import read_image

    buf = io.BytesIO()
    _png_image().save(buf, "JPEG", quality=quality)
    return read_image(buf.getvalue(), max_pixels=10**6)


def test_denoise_and_detail_blend_the_four_models_of_a_family(family, image):
    from core.catalog.catalog import choose_denoise
    from model.strength import Strength

    settings, files = family
    cache = EngineCache(settings, None)
    rw_gan = cache.catalog.resolve("rw_gan")
    # the corners are the four models themselves
    for detail, denoise, corner in ((0.0, 0.0, "psnr"), (1.0, 0.0, "gan"), (0.0, 1.0, "rw"), (1.0, 1.0, "rw_gan")):
        engine, blend = cache.get_blend("rw_gan", detail, Strength(denoise, "asked"))
        assert [(m.name, w) for m, w in blend.parts()] == [(corner, 1.0)]
        assert np.abs(engine.upscale(image).astype(int) - _run(files[corner], image).astype(int)).max() <= 1
    engine, blend = cache.get_blend("rw_gan", 0.25, Strength(0.5, "auto: jpeg q60, noise 1.0"))
    assert [(m.name, w) for m, w in blend.parts()] == [("psnr", 0.375), ("gan", 0.125), ("rw", 0.375),
                                                      ("rw_gan", 0.125)]
    assert blend.describe() == {"detail": 0.25, "detail_base": "rw:1", "detail_target": "rw_gan:1",
                                "denoise": {"value": 0.5, "from": "auto: jpeg q60, noise 1.0"},
                                "denoise_base": "gan:1"}
    # the same weights, however the strength was chosen: one engine
    assert cache.get_blend("rw_gan", 0.25, Strength(0.5, "asked"))[0] is engine
    # a denoise model alone: denoise blends it with its clean model
    _, blend = cache.get_blend("rw", None, Strength(0.3, "asked"))
    assert [(m.name, w) for m, w in blend.parts()] == [("psnr", 0.7), ("rw", 0.3)]

    # auto: a clean PNG gets 0 (the clean model), a bad JPEG more, a strong one the most
    clean = choose_denoise(rw_gan, "auto", _png_image())
    assert clean is not None and clean.value == 0.0 and clean.reason.startswith("auto: no jpeg tables")
    q60, q30 = choose_denoise(rw_gan, None, _jpeg_image(60)), choose_denoise(rw_gan, "auto", _jpeg_image(30))
    assert q60 is not None and q30 is not None and 0 < q60.value < q30.value
    assert q60.reason.startswith("auto: jpeg q60")
    assert choose_denoise(rw_gan, 0.62, _png_image()) == Strength(0.6, "asked")
    # a model without denoise control: auto leaves it alone, a number is refused
    psnr = cache.catalog.resolve("psnr")
    assert choose_denoise(psnr, "auto", _jpeg_image(30)) is None
    with pytest.raises(InvalidParameter, match="no denoise control"):
        choose_denoise(psnr, 0.5, _png_image())
    with pytest.raises(InvalidParameter, match="denoise must be between 0 and 1"):
        choose_denoise(rw_gan, 1.5, _png_image())


def _png_image():
    from PIL import Image

    y, x = np.mgrid[0:24, 0:32]
    return Image.fromarray(np.stack([x * 8, y * 10, x * 0 + 90], axis=2).astype(np.uint8))


def test_deploy_refuses_a_denoise_model_that_cannot_blend_with_its_clean_model(tmp_path):
    registry = Registry(tmp_path / "models")
    publish_checked(registry, make_conv_model(tmp_path / "clean.onnx", seed=1, name="clean"), name="clean")
    bad = _card(make_srresnet_model(tmp_path / "bad.onnx"), denoise_base="clean")
    with pytest.raises(DeployRefused, match="cannot serve denoise with clean.*different networks"):
        publish_checked(registry, bad, name="rw")
