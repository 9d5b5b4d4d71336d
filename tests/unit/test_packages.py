"""The top-level package names (the product's layout) come from this project, and nothing else shadows them."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("api", "bench", "cli", "core", "model", "training", "worker")


def _top_level(dist: metadata.Distribution) -> set[str]:
    names = set((dist.read_text("top_level.txt") or "").split())
    for file in dist.files or []:
        parts = Path(str(file)).parts
        if parts and not parts[0].endswith((".dist-info", ".egg-info", ".data")) and parts[0] != "..":
            names.add(parts[0].removesuffix(".py"))
    return names


def test_each_package_imports_from_the_installed_project_outside_the_checkout(tmp_path):
    """From another folder (no checkout on sys.path) each name is this project's package."""
    code = ("import importlib, json; print(json.dumps({n: importlib.import_module(n).__file__ for n in "
            + repr(PACKAGES) + "}))")
    out = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for name, file in json.loads(out.stdout).items():
        assert Path(file).resolve() == ROOT / name / "__init__.py", f"{name} comes from {file}"


def test_no_other_distribution_ships_these_names():
    ours = {"srgan-service", "srgan_service"}
    for dist in metadata.distributions():
        if dist.metadata["Name"] in ours:
            continue
        clash = _top_level(dist) & set(PACKAGES)
        assert not clash, f"{dist.metadata['Name']} {dist.version} also installs {sorted(clash)}"


def test_every_package_is_installed():
    include = {"api*", "worker*", "model*", "training*", "core*", "cli*", "bench*"}
    text = (ROOT / "pyproject.toml").read_text()
    assert all(f'"{p}"' in text for p in include) and {p.rstrip("*") for p in include} == set(PACKAGES)


def test_bench_does_not_import_the_tests():
    """The tiny-model builders live in bench/tiny_models.py; benchmarks work from an installed package."""
    offenders = [p.name for p in (ROOT / "bench").glob("*.py")
                 if "from tests" in p.read_text() or "import tests" in p.read_text()]
    assert not offenders
