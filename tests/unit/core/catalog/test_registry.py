"""The model registry on a real folder with real tiny ONNX files: publish, checks, pointer, rollback, seeding."""

from __future__ import annotations

import json
import os
import threading

import pytest

from bench.tiny_models import make_conv_model, make_nearest_model, with_declared_scale
from core.catalog.checks import check_model_file
from core.catalog.registry import POINTER_FILE, DeployRefused, Registry, find_card, sha256_of
from tests.utils.models import publish_checked

pytestmark = pytest.mark.unit


@pytest.fixture
def registry(tmp_path):
    return Registry(tmp_path / "models")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("files")
    nearest = make_nearest_model(folder / "nearest.onnx", scale=4)
    conv = make_conv_model(folder / "conv.onnx", scale=4)
    x2 = make_nearest_model(folder / "x2.onnx", scale=2)
    liar = with_declared_scale(x2, folder / "liar.onnx", 4)
    corrupt = folder / "corrupt.onnx"
    corrupt.write_bytes(nearest.read_bytes()[: len(nearest.read_bytes()) // 2])
    return {"nearest": nearest, "conv": conv, "liar": liar, "corrupt": corrupt}


def registry_state(registry):
    """Everything on disk under the registry, to show that a refusal changed nothing."""
    root = registry.root
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deploy_copies_the_file_and_a_card_and_activates_it(registry, files):
    v1 = publish_checked(registry, files["nearest"], name="sr", version="v1")
    assert v1.path == registry.root / "sr" / "v1" / "model.onnx"
    assert v1.path.read_bytes() == files["nearest"].read_bytes()
    card = json.loads((v1.path.parent / "card.json").read_text())
    assert card["name"] == "sr" and card["version"] == "v1" and card["scale"] == 4
    assert card["sha256"] == sha256_of(files["nearest"])
    assert card["onnx"]["opset"] == 17 and card["registry"]["check"] == "28x20 -> 112x80"
    assert card["registry"]["exported_as"] == {"name": "nearest", "version": "1"}
    assert registry.active_version("sr") == "v1" and v1.active
    assert [v.ref for v in registry.list()] == ["sr:v1"]


def test_a_new_version_becomes_active_and_rollback_returns_to_the_previous(registry, files):
    publish_checked(registry, files["nearest"], name="sr", version="v1")
    publish_checked(registry, files["conv"], name="sr", version="v2")
    assert registry.active_version("sr") == "v2"
    assert registry.get("sr").version == "v2" and registry.get("sr", "v1").version == "v1"
    assert registry.rollback("sr").version == "v1"
    assert registry.active_version("sr") == "v1"
    assert [(v.version, v.active) for v in registry.versions("sr")] == [("v1", True), ("v2", False)]
    with pytest.raises(DeployRefused, match="no earlier version"):
        registry.rollback("sr")
    assert registry.rollback("sr", to="v2").version == "v2"


def test_rollback_walks_back_through_the_activation_history(registry, files):
    for version, file in (("a", "nearest"), ("b", "conv"), ("c", "nearest")):
        publish_checked(registry, files[file], name="sr", version=version)
    assert registry.rollback("sr").version == "b"
    assert registry.rollback("sr").version == "a"


def test_no_activate_publishes_without_changing_the_active_version(registry, files):
    publish_checked(registry, files["nearest"], name="sr", version="v1")
    v2 = publish_checked(registry, files["conv"], name="sr", version="v2", activate=False)
    assert not v2.active and registry.active_version("sr") == "v1"
    assert registry.activate("sr", "v2").active


def test_default_version_is_the_files_own_then_the_next_number(registry, files):
    assert publish_checked(registry, files["nearest"], name="sr").version == "1"  # the contract says version 1
    assert publish_checked(registry, files["conv"], name="sr").version == "2"  # "1" is taken
    with pytest.raises(DeployRefused, match="already published"):
        publish_checked(registry, files["conv"], name="sr", version="2")


@pytest.mark.parametrize(("kind", "message"), [
    ("corrupt", "is not a valid ONNX model"),
    ("liar", r"declares x4, but a 28x20 image came out 56x40 instead of 112x80"),
    ("sha256", "differs from the card's"),
])
def test_bad_files_are_refused_and_nothing_changes(registry, files, tmp_path, kind, message):
    publish_checked(registry, files["nearest"], name="sr", version="v1")
    before = registry_state(registry)
    card = {"sha256": sha256_of(files["nearest"])} if kind == "sha256" else None  # the card of another file
    file = files["conv"] if kind == "sha256" else files[kind]
    with pytest.raises(DeployRefused, match=message):
        publish_checked(registry, file, name="sr", version="v2", card=card)
    assert registry.active_version("sr") == "v1"
    assert registry_state(registry) == before, "a refused file leaves no trace"


def test_declared_scales_must_agree(files):
    with pytest.raises(DeployRefused, match="the card says x2"):
        check_model_file(files["nearest"], card={"scale": 2})
    foreign = make_nearest_model(files["nearest"].parent / "foreign.onnx", scale=2, with_contract=False)
    with pytest.raises(DeployRefused, match="declares no scale"):
        check_model_file(foreign)
    assert check_model_file(foreign, scale=2).scale == 2
    with pytest.raises(DeployRefused, match="came out 56x40"):
        check_model_file(foreign, scale=3)


def test_the_card_beside_the_file_is_found_and_kept(registry, tmp_path, files):
    file = tmp_path / "export" / "srresnet.onnx"
    file.parent.mkdir()
    file.write_bytes(files["nearest"].read_bytes())
    (file.parent / "card.json").write_text(json.dumps({
        "name": "run7", "version": "step-500", "scale": 4, "sha256": sha256_of(file),
        "architecture": {"type": "SRResNet", "blocks": 16}, "training": {"steps": 500},
        "metrics": {"set5_psnr_y": 30.5}, "onnx": {"file": "srresnet.onnx", "opset": 17},
    }))
    assert find_card(file) == file.parent / "card.json"
    published = publish_checked(registry, file, name="sr")
    assert published.version == "step-500" and published.metrics == {"set5_psnr_y": 30.5}
    assert published.card["architecture"]["blocks"] == 16 and published.card["training"] == {"steps": 500}
    (file.parent / "card.json").write_text(json.dumps({"onnx": {"file": "other.onnx"}}))
    assert find_card(file) is None, "a card.json describing another file is not this file's card"


def test_bad_names_are_refused(registry, files):
    for name in ("../x", "a/b", "a:b", ".hidden", ""):
        with pytest.raises(DeployRefused, match="bad model name"):
            publish_checked(registry, files["nearest"], name=name)


def files_outside(root, registry):
    """Every file under ``root`` but outside the registry's folder."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and registry.root not in p.parents)


@pytest.mark.parametrize("name", ["../x", "a/b"])
@pytest.mark.parametrize("change", ["activate", "rollback"])
def test_activate_and_rollback_refuse_bad_names_and_write_nothing_outside(registry, files, tmp_path, name, change):
    publish_checked(registry, files["nearest"], name="sr", version="v1")
    # What the escaping name would point at: a published-looking version beside the registry.
    decoy = tmp_path / "x" / "v1"
    decoy.mkdir(parents=True)
    (decoy / "model.onnx").write_bytes(files["nearest"].read_bytes())
    inside, outside = registry_state(registry), files_outside(tmp_path, registry)

    with pytest.raises(DeployRefused, match="bad model name"):
        if change == "activate":
            registry.activate(name, "v1")
        else:
            registry.rollback(name, to="v1")

    assert files_outside(tmp_path, registry) == outside, "nothing is written outside the models folder"
    assert not (tmp_path / "x" / POINTER_FILE).exists()
    assert registry_state(registry) == inside and not (registry.root / "a").exists()


def test_pointer_is_replaced_atomically(registry, files, monkeypatch):
    publish_checked(registry, files["nearest"], name="sr", version="v1")
    publish_checked(registry, files["conv"], name="sr", version="v2", activate=False)
    pointer = registry.root / "sr" / POINTER_FILE
    seen, stop = set(), threading.Event()

    def read_forever():
        while not stop.is_set():
            seen.add(registry.active_version("sr"))

    reader = threading.Thread(target=read_forever)
    reader.start()
    try:
        for _ in range(100):
            registry.activate("sr", "v2")
            registry.activate("sr", "v1")
    finally:
        stop.set()
        reader.join()
    assert seen <= {"v1", "v2"}, f"a reader saw a half-written pointer: {seen}"
    assert not [p for p in pointer.parent.iterdir() if p.name.endswith(".tmp")]
    assert json.loads(pointer.read_text())["previous"][-1] == "v2"


def test_a_failed_copy_leaves_no_version(registry, files, monkeypatch):
    def broken_fsync(fd):
        raise OSError("disk full")

    publish_checked(registry, files["nearest"], name="sr", version="v1")
    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        publish_checked(registry, files["conv"], name="sr", version="v2")
    monkeypatch.undo()
    assert [v.version for v in registry.versions("sr")] == ["v1"] and registry.active_version("sr") == "v1"
    assert not [p for p in (registry.root / "sr").iterdir() if p.name.startswith(".incoming")]


def test_seeding_adds_the_shipped_model_once_and_never_replaces_a_deploy(registry, tmp_path, files):
    weights = tmp_path / "weights"
    weights.mkdir()
    shipped = weights / "srresnet_x4.onnx"
    shipped.write_bytes(files["nearest"].read_bytes())
    (weights / "srresnet_x4.card.json").write_text(json.dumps({"version": "2024.1", "scale": 4,
                                                                "sha256": sha256_of(shipped)}))
    (added,) = registry.seed(weights)
    assert added.ref == "srresnet_x4:2024.1" and added.active
    assert added.card["registry"]["source"] == "shipped: srresnet_x4.onnx"
    assert registry.seed(weights) == [], "seeding twice adds nothing"
    make_conv_model(shipped, seed=7)  # a newer package ships another version
    (weights / "srresnet_x4.card.json").write_text(json.dumps({"version": "2025.1", "scale": 4}))
    (newer,) = registry.seed(weights)
    assert newer.version == "2025.1" and newer.active, "a newer shipped default replaces the shipped one"
    publish_checked(registry, files["conv"], name="srresnet_x4", version="retrained")
    make_conv_model(shipped, seed=8)
    (weights / "srresnet_x4.card.json").write_text(json.dumps({"version": "2026.1", "scale": 4}))
    (newest,) = registry.seed(weights)
    assert newest.version == "2026.1" and not newest.active
    assert registry.active_version("srresnet_x4") == "retrained", "a deployed version is never replaced"


def test_seeding_refuses_a_shipped_file_that_does_not_match_its_card(registry, tmp_path, files):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "m.onnx").write_bytes(files["nearest"].read_bytes())
    (weights / "m.card.json").write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(DeployRefused, match="differs from its card"):
        registry.seed(weights)
    assert not registry.has("m")
