"""Filling a registry in tests: a file checked through the engine, then written into the store.

``core.catalog.publish.Publisher`` is the one publish path of the product (sync, gate, announce);
tests of the pieces underneath it (the registry, the catalog's reads, the engine cache) only need
versions in a folder, checked as a publish checks them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.tiny_models import make_conv_model
from core.catalog.checks import check_model_file
from core.catalog.registry import ModelVersion, Registry, find_card, read_card


def publish_checked(
    registry: Registry,
    file: Path,
    *,
    name: str,
    version: str | None = None,
    card: dict[str, Any] | None = None,
    scale: int | None = None,
    activate: bool = True,
    source: str | None = None,
) -> ModelVersion:
    """Check ``file`` (``check_model_file``) and publish it into ``registry`` as ``name``; raises DeployRefused.

    ``card`` defaults to the one beside the file, or none.
    """
    file = Path(file)
    if card is None:
        found = find_card(file)
        card = read_card(found) if found else {}
    checked = check_model_file(file, card=card, scale=scale)
    return registry.publish(file, name=name, version=version, card=card, checked=checked, activate=activate,
                            source=source or str(file.resolve()))


def publish_family(registry: Registry, folder: Path, cards: dict[str, dict[str, Any]], *, seed: int = 0) -> None:
    """Publish one tiny conv model of one architecture per ``cards`` entry (name -> its card: ``detail_base``,
    ``denoise_base``), each with other weights: a model family whose ``detail``/``denoise`` blends are real."""
    for i, (name, card) in enumerate(cards.items()):
        path = make_conv_model(Path(folder) / f"{name}.onnx", seed=seed + i, name=name)
        publish_checked(registry, path, name=name, card=card)
