"""Dependency floors stay above known advisories, and the lock files agree with pyproject.toml."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
LOCKS = {"api": ["s3"], "worker-cpu": ["cpu", "openvino", "s3"], "worker-gpu": ["gpu", "s3"],
         "ci": ["cpu", "openvino", "train", "dev", "s3", "reference", "nncf", "import"]}

# package -> first version without the advisory (what a floor must reach)
ADVISORY_FLOORS = {
    "starlette": "0.49.1",  # CVE-2025-62727, Range-header DoS in FileResponse
    "python-multipart": "0.0.18",  # CVE-2024-53981
    "pillow": "11.3",  # CVE-2025-48379
    "h11": "0.16",  # CVE-2025-43859
    "tqdm": "4.66.3",  # CVE-2024-34062
    "onnx": "1.17",  # CVE-2024-5187
}


def requirements(extras: list[str]) -> list[Requirement]:
    listed = PYPROJECT["project"]["dependencies"] + [
        r for extra in extras for r in PYPROJECT["project"]["optional-dependencies"][extra]]
    return [Requirement(r) for r in listed]


def locked(name: str) -> dict[str, Version]:
    text = (REPO / "requirements" / f"{name}.lock").read_text()
    return {m[1].lower(): Version(m[2]) for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==(\S+)", text, re.M)}


def floor(req: Requirement) -> Version | None:
    floors = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
    return max(floors) if floors else None


@pytest.mark.parametrize(("package", "fixed"), ADVISORY_FLOORS.items())
def test_floors_exclude_versions_with_known_advisories(package, fixed):
    (req,) = [r for r in requirements([]) if r.name.lower() == package]
    lowest = floor(req)
    assert lowest is not None and lowest >= Version(fixed), f"{req} admits versions below {fixed}"


@pytest.mark.parametrize(("lock", "extras"), LOCKS.items())
def test_lock_files_satisfy_pyproject(lock, extras):
    pins = locked(lock)
    env = {"python_version": "3.10" if lock == "worker-gpu" else "3.11", "platform_machine": "x86_64",
           "sys_platform": "linux", "platform_system": "Linux"}
    for req in requirements(extras):
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = req.name.lower()
        assert name in pins, f"{lock}.lock lacks {req.name}: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{lock}.lock pins {name}=={pins[name]}, outside {req}: run `make lock`")


@pytest.mark.parametrize("lock", ["api", "worker-cpu", "worker-gpu"])
def test_service_images_carry_neither_nncf_nor_torch(lock):
    """int8 runs on ONNX Runtime's quantizer (the cpu extra); NNCF is for `srgan bench int8` only; torch,
    torchvision and spandrel (the import extra) for `srgan import` only."""
    pins = locked(lock)
    assert not {"nncf", "torch", "torchvision", "spandrel", "scikit-learn"} & set(pins), (
        f"{lock}.lock pulls a measurement-only package")


def test_ci_installs_torchs_cpu_build():
    """make test installs the import extra with torch's CPU-only build (from TORCH_FIND_LINKS, /opt/wheels here),
    never PyPI's CUDA one with its ~5.8 GB of nvidia-* libraries: the lock pins the +cpu release, and neither
    nvidia-* nor triton is in it."""
    pins = locked("ci")
    assert pins["torch"].local == "cpu", f"ci.lock pins torch=={pins['torch']}: run `make lock` (TORCH_FIND_LINKS)"
    assert not [name for name in pins if name.startswith("nvidia-") or name == "triton"]
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^test:\n\t\$\(MAKE\) EXTRAS=[a-z,]*\bimport\b", makefile, re.M), "make test lacks import"
    assert "TORCH_FIND_LINKS ?= $(wildcard /opt/wheels)" in makefile
