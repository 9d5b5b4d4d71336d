"""The ONNX contract: what an exported generator promises the engine.

Written once here; ``training/`` stores it in every exported file's metadata
(``export_onnx``) and the engine reads it back on load. A foreign file that
lacks it is described by :func:`infer_contract` (layout from the input shape,
scale from a probe run in the engine) or by explicit options.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from model.errors import ModelError

if TYPE_CHECKING:  # start-up: the API and srgan read contracts without onnx
    import onnx

METADATA_KEY = "srgan_contract"
"""Key of the ONNX ``metadata_props`` entry holding the contract as JSON."""

CONTRACT_VERSION = 1

Layout = Literal["NHWC", "NCHW"]


@dataclass(frozen=True)
class Tiling:
    """What a network needs from the tiling engine (``model.engine``), in input (LR) pixels.

    Args:
        min_overlap: the least context a tile needs on each interior side: the engine runs with the larger of
            this and its configured overlap (``SRGAN_OVERLAP``). A network that sees far (RRDBNet: 351
            convolutions) shows seams with the default 8 pixels.
        pre_pad: pixels reflected around the whole image before the network and cropped off its output, as
            Real-ESRGAN's inference does (``pre_pad``): the image's border then has picture around it where the
            convolutions would pad with zeros. Only the image's own border: tiles inside it get real context.

    The default (0, 0) leaves the engine as configured: the models of ``training/`` state nothing.
    """

    min_overlap: int = 0
    pre_pad: int = 0

    def __post_init__(self) -> None:
        if self.min_overlap < 0 or self.pre_pad < 0:
            raise ValueError(f"tiling's min_overlap and pre_pad must be >= 0, got {self}")

    @classmethod
    def from_json(cls, body: dict[str, Any] | None) -> Tiling:
        """The tiling a contract or a card states (``{"min_overlap": 32, "pre_pad": 10}``; None: the default)."""
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: int(v) for k, v in (body or {}).items() if k in known})

    def to_json(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class ModelContract:
    """How to feed a generator and read its output.

    Args:
        scale: upscaling factor (output height = scale x input height).
        input_name: name of the single image input.
        output_name: name of the image output.
        layout: ``NHWC`` or ``NCHW``, the same for input and output.
        dtype: element type of input and output (``float32``).
        value_range: pixel values of input and output, (low, high); the
            generators of ``training/`` take and give 0..255.
        channels: colour channels in and out (3, RGB order).
        name, version: the model's identity, also kept in its card.
        metrics: measured quality (e.g. ``{"set5_psnr_y": 30.1}``).
        tiling: what the network needs from the tiling (:class:`Tiling`); stored only when not the default.
    """

    scale: int
    input_name: str = "lr"
    output_name: str = "hr"
    layout: Layout = "NHWC"
    dtype: str = "float32"
    value_range: tuple[float, float] = (0.0, 255.0)
    channels: int = 3
    name: str = ""
    version: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    tiling: Tiling = Tiling()

    def __post_init__(self) -> None:
        if self.scale < 1:
            raise ValueError(f"scale must be >= 1, got {self.scale}")
        if self.layout not in ("NHWC", "NCHW"):
            raise ValueError(f"layout must be NHWC or NCHW, got {self.layout!r}")
        if self.dtype != "float32":
            raise ValueError(f"only float32 models are supported, got {self.dtype!r}")
        lo, hi = self.value_range
        if not hi > lo:
            raise ValueError(f"value_range must be (low, high) with high > low, got {self.value_range}")

    def to_metadata(self) -> dict[str, str]:
        """The ``metadata_props`` entries that store this contract."""
        body = asdict(self)
        body["value_range"] = list(self.value_range)
        if self.tiling == Tiling():
            del body["tiling"]  # a contract without tiling reads as before, and older readers skip the key
        body["contract_version"] = CONTRACT_VERSION
        return {METADATA_KEY: json.dumps(body, sort_keys=True), "scale": str(self.scale)}

    @classmethod
    def from_metadata(cls, props: dict[str, str]) -> ModelContract | None:
        """The contract stored in ``props``, or None when the file has none."""
        raw = props.get(METADATA_KEY)
        if raw is None:
            return None
        body = json.loads(raw)
        body.pop("contract_version", None)
        body["value_range"] = tuple(body.get("value_range", (0.0, 255.0)))
        body["tiling"] = Tiling.from_json(body.get("tiling"))
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in body.items() if k in known})

    @classmethod
    def of_proto(cls, proto: onnx.ModelProto) -> ModelContract | None:
        """The contract stored in a loaded ONNX model's ``metadata_props``, or None."""
        return cls.from_metadata({p.key: p.value for p in proto.metadata_props})

    @classmethod
    def read(cls, path: str | Path) -> ModelContract | None:
        """The contract stored in the ONNX file ``path`` (None: a foreign file without one), read with
        :func:`read_metadata` (no onnx import, no parse of the weights).

        Raises:
            ModelError: the file cannot be read as ONNX.
        """
        return cls.from_metadata(read_metadata(path))

    def store_in(self, proto: onnx.ModelProto) -> None:
        """Store this contract in ``proto``'s ``metadata_props``, replacing any earlier one."""
        entries = self.to_metadata()
        keep = [p for p in proto.metadata_props if p.key not in entries]
        del proto.metadata_props[:]
        proto.metadata_props.extend(keep)
        for key, value in entries.items():
            proto.metadata_props.add(key=key, value=value)

    def with_identity(self, name: str, version: str, metrics: dict[str, float] | None = None) -> ModelContract:
        return replace(self, name=name, version=version, metrics=dict(metrics or self.metrics))


def load_proto(path: str | Path) -> onnx.ModelProto:
    """The ONNX graph in ``path`` without external weights; raises ModelError when it is not ONNX."""
    import onnx  # start-up: the API and srgan read contracts without onnx


    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises several unrelated types
        raise ModelError(f"cannot read model file {path}: {exc}") from exc


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of the ONNX file ``path``, read off its protobuf encoding: a model's fields are
    walked and skipped by their lengths, so neither onnx nor the weights are parsed (start-up: ``srgan upscale``
    describes the model it loads from a warm compile cache without onnx). A file that does not walk as a model
    with a graph is left to onnx, whose ModelError says why it is not ONNX.
    """
    data = Path(path).read_bytes()
    try:
        return _metadata_props(data)
    except (ValueError, IndexError, UnicodeDecodeError):
        return {p.key: p.value for p in load_proto(path).metadata_props}


_MODEL_GRAPH, _MODEL_METADATA = 7, 14
"""``ModelProto``'s field numbers of ``graph`` and ``metadata_props`` (onnx.proto)."""


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int, int | bytes]]:
    """``(field number, wire type, value)`` of a protobuf message: an int, or a length-delimited field's bytes."""
    at, end = start, len(data) if end is None else end
    while at < end:
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
            yield number, wire, value
        elif wire == 2:
            size, at = _varint(data, at)
            if at + size > end:
                raise ValueError("field past the end")
            yield number, wire, data[at:at + size]
            at += size
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
            yield number, wire, 0
        else:
            raise ValueError(f"wire type {wire}")
    if at != end:
        raise ValueError("truncated message")


def _metadata_props(data: bytes) -> dict[str, str]:
    props: dict[str, str] = {}
    graph = False
    for number, wire, value in _fields(data):
        graph = graph or (number == _MODEL_GRAPH and wire == 2)
        if number == _MODEL_METADATA and isinstance(value, bytes):
            entry = {n: v for n, w, v in _fields(value) if w == 2 and isinstance(v, bytes)}
            props[entry.get(1, b"").decode()] = entry.get(2, b"").decode()
    if not graph:
        raise ValueError("no graph")
    return props


def infer_layout(input_shape: list[object]) -> Layout:
    """Guess the layout of a 4-D image input from its (possibly symbolic) shape."""
    if len(input_shape) != 4:
        raise ValueError(f"expected a 4-D image input, got shape {input_shape}")
    if input_shape[3] in (1, 3, 4):
        return "NHWC"
    if input_shape[1] in (1, 3, 4):
        return "NCHW"
    raise ValueError(f"cannot tell the layout of input shape {input_shape}; pass it explicitly")
