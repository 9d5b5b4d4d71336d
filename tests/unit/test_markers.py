"""Every test module carries the marker of its folder (unit, integration, e2e), so ``-m`` selects by kind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

TESTS = Path(__file__).resolve().parents[1]
KINDS = ("unit", "integration", "e2e")


def test_every_test_module_is_marked_with_its_kind():
    unmarked = []
    for kind in KINDS:
        for module in sorted((TESTS / kind).rglob("test_*.py")):
            marks = re.search(r"^pytestmark = (.+)$", module.read_text(), re.MULTILINE)
            if not marks or f"pytest.mark.{kind}" not in marks.group(1):
                unmarked.append(module.relative_to(TESTS).as_posix())
    assert not unmarked, f"test modules without `pytestmark = pytest.mark.<kind>` of their folder: {unmarked}"
