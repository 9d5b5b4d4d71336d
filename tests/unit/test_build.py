"""The install path: ``pyproject.toml`` as setuptools reads it, and the Makefile's environment stamps."""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]


def test_pyproject_configures_setuptools_without_a_deprecation_warning():
    """Every install printed setuptools' banner for ``license = { text = ... }``; an SPDX string has none."""
    from setuptools.config.pyprojecttoml import apply_configuration  # type: ignore[import-untyped]
    from setuptools.dist import Distribution  # type: ignore[import-untyped]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), REPO / "pyproject.toml")
    assert [str(w.message).splitlines()[0] for w in caught] == []
    assert dist.metadata.license_expression == "MIT"


@pytest.fixture
def venv(tmp_path: Path) -> tuple[Path, Path]:
    """A stand-in environment: its ``python`` records how it was called instead of installing anything."""
    if shutil.which("make") is None:
        pytest.fail("make is not installed")
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    fake = bin_dir / "python"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    return tmp_path / "venv", calls


def make(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-s", f"VENV={venv}", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, check=True)


def test_an_environment_with_a_superset_of_the_extras_is_not_installed_again(venv):
    """``make serve`` (cpu,openvino) after ``make test`` (cpu,openvino,train,dev) reinstalled everything."""
    path, calls = venv
    (path / ".installed-cpu-openvino-train-dev").touch()
    out = make(path, "EXTRAS=cpu,openvino", "venv")
    assert not calls.exists(), calls.read_text()
    assert "has the extras cpu,openvino already" in out.stdout
    assert (path / ".installed-cpu-openvino").is_file()


def test_other_extras_or_a_stale_environment_are_installed(venv):
    path, calls = venv
    (path / ".installed-cpu-openvino-train-dev").touch()
    make(path, "EXTRAS=gpu", "venv")
    assert "-e .[gpu]" in calls.read_text()
    calls.unlink()
    stale = path / ".installed-cpu-openvino-train-dev-extra"
    stale.touch()
    os.utime(stale, (0, 0))  # older than pyproject.toml: installed before the last change of the dependencies
    (path / ".installed-cpu-openvino-train-dev").unlink()
    make(path, "EXTRAS=cpu,openvino", "venv")
    assert "-e .[cpu,openvino]" in calls.read_text()


def test_make_serve_takes_a_port(venv):
    path, _ = venv
    out = subprocess.run(["make", "-n", f"VENV={path}", "EXTRAS=cpu", "PORT=8123", "serve"], cwd=REPO,
                         capture_output=True, text=True, timeout=60, check=True)
    assert f"{path}/bin/srgan serve --port 8123" in out.stdout
