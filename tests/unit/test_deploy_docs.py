"""docs/deploy.md says how models reach other hosts as the code does it: through the object store's registry
mirror (core/catalog/store_sync.py), not by publishing on every host or sharing a volume."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

DOC = (Path(__file__).resolve().parents[2] / "docs" / "deploy.md").read_text()


def test_deploy_docs_describe_the_registry_mirror_not_the_old_ways():
    text = " ".join(DOC.split())
    assert "until the registry moves into the object store" not in text
    assert "publish it on every worker host" not in text
    assert "core/catalog/store_sync.py" in text and "Publish once, anywhere." in text
    assert "No shared volume is needed." in text
