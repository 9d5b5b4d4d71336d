"""The models shipped in the package (``model/weights``), and the one test of whether what a user typed is a path
or a name."""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "model" / "weights"
"""The package data of ``model`` (``model/weights/<name>.onnx`` with their cards): seeded into the registry."""


def shipped_models(weights_dir: Path = WEIGHTS_DIR) -> list[str]:
    """Names of the models that ship inside the package (``model/weights/<name>.onnx``)."""
    return sorted(p.stem for p in Path(weights_dir).glob("*.onnx"))


def shipped_file(name: str, weights_dir: Path = WEIGHTS_DIR) -> Path | None:
    """The shipped file of model ``name`` (None: no such shipped model)."""
    path = Path(weights_dir) / f"{name}.onnx"
    return path if "/" not in name and path.is_file() else None


def is_path(spec: str) -> bool:
    """Whether ``spec`` names a file (``x.onnx``, ``dir/x``, an existing file) rather than a model name."""
    return spec.endswith(".onnx") or "/" in spec or Path(spec).expanduser().is_file()
