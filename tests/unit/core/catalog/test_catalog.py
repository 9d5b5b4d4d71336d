"""The model catalog: what a name means, what the API offers (read from the ONNX contract without ONNX Runtime)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

import core.catalog.catalog
from bench.tiny_models import make_nearest_model
from core.catalog.catalog import ModelCatalog
from core.catalog.shipped import shipped_models
from core.settings import Settings
from model.errors import InvalidParameter, ModelError

pytestmark = pytest.mark.unit


@pytest.fixture
def settings(tmp_path):
    return Settings(_env_file=None, model=str(make_nearest_model(tmp_path / "n.onnx", scale=4)),
                    models_dir=tmp_path / "models")


def ours(models):
    """Leave out the shipped default, which every registry holds from the start (when the package ships it)."""
    return [m for m in models if m.name not in shipped_models()]


def test_contract_gives_name_version_scale(settings):
    (info,) = ours(ModelCatalog(settings).offered())
    assert (info.name, info.version, info.scale, info.ref, info.active) == ("nearest", "1", 4, "nearest:1", True)


def test_file_without_contract_is_named_by_its_stem(tmp_path):
    catalog = ModelCatalog(Settings(_env_file=None, models_dir=tmp_path / "m"))
    info = catalog.describe_file(make_nearest_model(tmp_path / "foreign.onnx", with_contract=False))
    assert (info.name, info.version, info.scale) == ("foreign", "", None)


def test_selection_by_name_version_and_scale(settings):
    assert ModelCatalog(settings).select(model=None, scale=None).name == "nearest"
    assert ModelCatalog(settings).select(model="nearest:1", scale=4).name == "nearest"
    assert ModelCatalog(settings).select(model=None, scale=3).name == "nearest", "other scales are resampled"
    assert ModelCatalog(settings).select(model=None, scale=2).name == "srresnet_x2", "a native x2 runs x2 jobs"
    for bad in ("other", "nearest:2"):
        with pytest.raises(InvalidParameter, match="offered: nearest:1"):
            ModelCatalog(settings).select(model=bad, scale=None)


def test_missing_model_is_a_model_error(tmp_path):
    settings = Settings(_env_file=None, model=str(tmp_path / "gone.onnx"), models_dir=tmp_path / "models")
    with pytest.raises(ModelError, match="not found"):
        ModelCatalog(settings).select(model=None, scale=None)


@pytest.mark.skipif(not shipped_models(), reason="no model ships in model/weights yet")
def test_the_shipped_default_is_in_every_registry_once_seeded(tmp_path):
    settings = Settings(_env_file=None, models_dir=tmp_path / "models")
    catalog = ModelCatalog(settings)
    assert catalog.resolve(None).source == "file", "before the start-up seeding, the shipped file itself"
    assert not (tmp_path / "models").exists(), "reads never write"
    catalog.seed()
    (default,) = [m for m in catalog.offered() if m.default]
    assert default.name == settings.model and default.source == "registry" and default.active
    assert default.path.parent.parent == tmp_path / "models" / settings.model


# --- with the registry -----------------------------------------------------------
@pytest.fixture
def registry_settings(tmp_path):
    from core.catalog.registry import Registry
    from tests.utils.models import publish_checked

    registry = Registry(tmp_path / "models")
    publish_checked(registry, make_nearest_model(tmp_path / "v1.onnx", scale=4), name="sr", version="v1")
    publish_checked(registry, make_nearest_model(tmp_path / "v2.onnx", scale=4, name="other"), name="sr", version="v2")
    publish_checked(registry, make_nearest_model(tmp_path / "x2.onnx", scale=2), name="sr2", version="1")
    return Settings(_env_file=None, models_dir=tmp_path / "models", model="sr")


def test_registry_versions_are_offered_with_the_active_and_default_marked(registry_settings):
    offered = {m.ref: (m.active, m.default, m.scale, m.source) for m in ours(ModelCatalog(registry_settings).offered())}
    assert offered == {"sr:v1": (False, False, 4, "registry"), "sr:v2": (True, True, 4, "registry"),
                       "sr2:1": (True, False, 2, "registry")}


def test_names_resolve_to_the_active_version_and_name_version_pins(registry_settings):
    catalog = ModelCatalog(registry_settings)
    assert catalog.resolve(None).ref == "sr:v2"
    assert catalog.resolve("sr").ref == "sr:v2"
    assert catalog.resolve("sr:v1").ref == "sr:v1"
    assert catalog.resolve("sr:v1").path.parts[-3:] == ("sr", "v1", "model.onnx")
    with pytest.raises(ModelError, match="versions of sr: v1, v2"):
        catalog.resolve("sr:v9")


def test_selection_uses_the_registry(registry_settings):
    assert ModelCatalog(registry_settings).select(model=None, scale=None).ref == "sr:v2"
    assert ModelCatalog(registry_settings).select(model="sr:v1", scale=None).ref == "sr:v1"
    catalog = ModelCatalog(registry_settings)
    assert catalog.select(model=None, scale=2).ref == "sr2:1", "a model made for x2 is preferred"
    assert ModelCatalog(registry_settings).select(model="sr", scale=2).ref == "sr:v2", "a named model is resampled"


@pytest.mark.parametrize(("scale", "ref"), [(None, "sr:v2"), (1, "sr2:1"), (1.5, "sr2:1"), (2, "sr2:1"), (2.5, "sr:v2"),
                                            (3, "sr:v2"), (4, "sr:v2"), (6, "sr:v2"), (8, "sr:v2")])
def test_the_smallest_native_scale_that_reaches_the_need_runs(registry_settings, scale, ref):
    """x2 and x1.5 run the x2 model (then resampled down), x3 the x4 one; x6, beyond every model, the largest
    (resampled up). The inactive sr:v1 is never picked by scale."""
    assert ModelCatalog(registry_settings).select(model=None, scale=scale).ref == ref


@pytest.fixture
def family_settings(tmp_path):
    """A registry with the family ``photo`` (photo_x2, photo_x4; photo_x4 also has an older version) and a
    model named ``photo``'s neighbour ``photos_x2`` that is not of it."""
    from core.catalog.registry import Registry
    from tests.utils.models import publish_checked

    registry = Registry(tmp_path / "models")
    for name, version, scale in [("photo_x4", "1", 4), ("photo_x4", "2", 4), ("photo_x2", "1", 2),
                                 ("photos_x2", "1", 2)]:
        publish_checked(registry, make_nearest_model(tmp_path / f"{name}-{version}.onnx", scale=scale), name=name,
                        version=version)
    return Settings(_env_file=None, models_dir=tmp_path / "models", model="photo_x4")


@pytest.mark.parametrize(("scale", "ref"), [(None, "photo_x4:2"), (1.5, "photo_x2:1"), (2, "photo_x2:1"),
                                            (2.5, "photo_x4:2"), (4, "photo_x4:2"), (8, "photo_x4:2")])
def test_a_family_name_runs_its_member_for_the_scale(family_settings, scale, ref):
    """``model=photo`` picks within photo_x2/photo_x4 by scale (their largest with none asked), active versions
    only, never another family's model (photos_x2) nor a model outside any family."""
    catalog = ModelCatalog(family_settings)
    assert catalog.select(model="photo", scale=scale).ref == ref
    assert catalog.spec_for("photo", scale) == ref, "a local run resolves the same member"


def test_family_names_do_not_shadow_models_and_unknown_families_are_refused(family_settings, tmp_path):
    from core.catalog.catalog import family_of

    assert [family_of(n) for n in ("realworld_x2", "realworld_x4", "srgan_x4", "sr", "x4", "a_xb", "a_x")] == \
        ["realworld", "realworld", "srgan", None, None, None, None]
    catalog = ModelCatalog(family_settings)
    assert catalog.select(model="photo_x4", scale=2).ref == "photo_x4:2", "a named model is still resampled"
    assert catalog.spec_for("photo_x4", 2) == "photo_x4", "a named model is run as named"
    assert catalog.spec_for(None, None) is None and catalog.spec_for(None, 2) == "photo_x2:1"
    with pytest.raises(InvalidParameter, match="unknown model 'phot'"):
        catalog.select(model="phot", scale=2)
    with pytest.raises(InvalidParameter, match="unknown model 'photo:1'"):
        catalog.select(model="photo:1", scale=2)  # a version pins a model, not a family


def test_ties_go_to_the_default_and_unknown_scales_are_skipped(registry_settings, tmp_path):
    from core.catalog.catalog import by_scale

    default = ModelCatalog(registry_settings).resolve(None)
    other = dataclasses.replace(default, name="other4")
    unknown = dataclasses.replace(default, name="foreign", scale=None)
    small = dataclasses.replace(default, name="x3", scale=3)
    assert by_scale(default, [unknown, other, default], 3).name == "sr"
    assert by_scale(default, [unknown, other, small, default], 3).name == "x3"
    assert by_scale(default, [unknown, other, default], 8).name == "sr"
    assert by_scale(default, [dataclasses.replace(small, active=False)], 2).name == "sr", "only active versions"
    with pytest.raises(InvalidParameter, match=r"offered: sr:v1, sr:v2 \(active\), sr2:1 \(active\)"):
        ModelCatalog(registry_settings).select(model="sr:v3", scale=None)


def test_ties_go_to_the_default_s_family_then_to_clean_models(registry_settings):
    """x2 with the default srresnet_x4 runs srresnet_x2, with the default realworld_x4 realworld_x2, whatever the order
    offered; with a default of no family, a clean x2 before a real-world one."""
    from core.catalog.catalog import by_scale

    base = ModelCatalog(registry_settings).resolve(None)
    clean4 = dataclasses.replace(base, name="srresnet_x4")
    clean2 = dataclasses.replace(base, name="srresnet_x2", scale=2)
    real4 = dataclasses.replace(base, name="realworld_x4", denoise_base="srresnet_x4")
    real2 = dataclasses.replace(base, name="realworld_x2", scale=2, denoise_base="srresnet_x2")
    for offered in ([real2, clean2, real4, clean4], [clean2, real2, clean4, real4]):
        assert by_scale(clean4, offered, 2) is clean2
        assert by_scale(real4, offered, 2) is real2
        assert by_scale(base, offered, 2) is clean2
        assert by_scale(real4, offered, 3) is real4


def test_denoise_auto_uses_the_thresholds_of_the_model_s_card(tmp_path):
    """A card's ``denoise_auto`` (``srgan bench realworld --calibrate --write-card``) is what ``auto`` maps a
    JPEG's quality with for that model; a model without one gets the realworld_x4 fit."""
    import io

    import numpy as np
    from PIL import Image

    from core.catalog.catalog import choose_denoise
    from core.catalog.registry import Registry
    from model.images import read_image
    from model.strength import AUTO, AutoThresholds
    from tests.utils.models import publish_checked

    registry = Registry(tmp_path / "models")
    publish_checked(registry, make_nearest_model(tmp_path / "c.onnx", scale=2), name="clean_x2")
    fit = {"jpeg_clean": 90.0, "jpeg_strong": 30.0, "noise_clean": 20.0, "noise_strong": 40.0}
    cards: list[tuple[str, dict[str, Any]]] = [
        ("real_x2", {"denoise_base": "clean_x2", "denoise_auto": {"thresholds": fit}}),
        ("plain_x2", {"denoise_base": "clean_x2"})]
    for name, card in cards:
        publish_checked(registry, make_nearest_model(tmp_path / f"{name}.onnx", scale=2), name=name, card=card)
    catalog = ModelCatalog(Settings(_env_file=None, models_dir=tmp_path / "models", model="clean_x2"))
    assert catalog.resolve("real_x2").denoise_auto == AutoThresholds(**fit)
    assert catalog.resolve("plain_x2").denoise_auto is AUTO
    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(buf, format="JPEG", quality=60)
    upload = read_image(buf.getvalue(), max_pixels=64 * 64)
    own = choose_denoise(catalog.resolve("real_x2"), "auto", upload)
    assert own is not None and own.value == 0.5, own  # (90 - 60) / (90 - 30)
    default = choose_denoise(catalog.resolve("plain_x2"), "auto", upload)
    assert default is not None and default.value != own.value


def test_the_configured_file_is_offered_beside_the_registry(registry_settings, tmp_path):
    settings = registry_settings.model_copy(update={"model": str(make_nearest_model(tmp_path / "f.onnx"))})
    offered = ours(ModelCatalog(settings).offered())
    assert offered[0].source == "file" and offered[0].default and offered[0].ref == "nearest:1"
    assert [m.ref for m in offered[1:]] == ["sr:v1", "sr:v2", "sr2:1"]
    assert ModelCatalog(settings).select(model="nearest", scale=None).source == "file"


def test_reads_never_write_the_registry(tmp_path):
    """Resolving, listing and selecting leave the registry folder as it was (seeding is a start-up step)."""
    settings = Settings(_env_file=None, models_dir=tmp_path / "models",
                        model=str(make_nearest_model(tmp_path / "n.onnx", scale=4)))
    catalog = ModelCatalog(settings)
    catalog.resolve(None)
    catalog.offered()
    catalog.select(model=None, scale=None)
    if shipped_models():
        assert catalog.resolve(shipped_models()[0]).source == "file"
    assert not (tmp_path / "models").exists()


def test_no_module_level_state():
    """Two catalogs never share a cache or a "seeded" flag through the module."""
    mutable = {k for k, v in vars(core.catalog.catalog).items()
               if not k.startswith("__") and isinstance(v, (dict, set, list)) and k != "__all__"}
    assert not mutable, f"module-level state in core.catalog.catalog: {mutable}"


def test_the_offer_is_read_once_until_the_registry_changes(registry_settings, tmp_path):
    from core.catalog.registry import Registry
    from tests.utils.models import publish_checked

    catalog = ModelCatalog(registry_settings)
    first = catalog.offered()
    assert catalog.offered() is first, "an unchanged registry: no card re-read"
    publish_checked(Registry(tmp_path / "models"), make_nearest_model(tmp_path / "v3.onnx", scale=4), name="sr",
                 version="v3")
    assert [m.ref for m in ours(catalog.offered()) if m.active] == ["sr:v3", "sr2:1"], "a deploy is seen at once"
    Registry(tmp_path / "models").rollback("sr")
    assert [m.ref for m in ours(catalog.offered()) if m.active] == ["sr:v2", "sr2:1"], "so is a rollback"


class CountingCatalog(ModelCatalog):
    calls = 0

    def offered(self):  # noqa: ANN201
        self.calls += 1
        return super().offered()


def test_a_job_with_detail_reads_the_offer_once(tmp_path):
    """POST /v1/jobs with `detail` used to list the offered models twice (the model, then its detail base)."""
    import json

    from api.admission import choose_model
    from api.schemas import JobRequest
    from core.catalog.registry import Registry
    from tests.utils.models import publish_checked

    registry = Registry(tmp_path / "models")
    publish_checked(registry, make_nearest_model(tmp_path / "psnr.onnx", scale=4, name="psnr"), name="psnr")
    gan = make_nearest_model(tmp_path / "gan.onnx", scale=4, name="gan")
    (tmp_path / "gan.card.json").write_text(json.dumps({"detail_base": "psnr"}))
    publish_checked(registry, gan, name="gan")
    catalog = CountingCatalog(Settings(_env_file=None, models_dir=tmp_path / "models", model="gan"))

    class Services:  # what choose_model reads of api.deps.Services
        pass

    services = Services()
    services.catalog = catalog  # type: ignore[attr-defined]
    chosen = choose_model(services, JobRequest(model="gan", detail=0.5), None)  # type: ignore[arg-type]
    assert chosen.ref == "gan:1" and catalog.calls == 1
