"""Find a model file from what a user typed: a path, or the name of a shipped model."""

from __future__ import annotations

from pathlib import Path

from model.errors import ModelError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_MODEL = "srresnet_x4"


def shipped_models() -> list[str]:
    """Names of the models that ship inside the package (``model/weights/<name>.onnx``)."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.onnx"))


def resolve_model(spec: str | Path | None) -> Path:
    """The ONNX file named by ``spec``: an existing ``.onnx`` path, or a shipped model's name.

    Raises:
        ModelError: nothing matches; the message says what exists.
    """
    spec = str(spec or DEFAULT_MODEL)
    candidate = Path(spec).expanduser()
    if candidate.suffix == ".onnx" or candidate.exists():
        if not candidate.is_file():
            raise ModelError(f"model file not found: {candidate}")
        return candidate
    shipped = WEIGHTS_DIR / f"{spec}.onnx"
    if shipped.is_file():
        return shipped
    available = shipped_models()
    if spec == DEFAULT_MODEL and not available:
        raise ModelError(
            f"the default model '{DEFAULT_MODEL}' is not shipped in this build yet "
            f"(expected {shipped}); pass --model PATH.onnx or set SRGAN_MODEL to an ONNX file"
        )
    names = ", ".join(available) or "none"
    raise ModelError(f"unknown model '{spec}': not a .onnx file and not a shipped model (shipped: {names})")
