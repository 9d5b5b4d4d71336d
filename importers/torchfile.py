"""PyTorch weight files read without PyTorch: ``.pth``/``.pt`` (torch's zip format) and ``.safetensors``.

A ``.pth`` is a zip holding ``data.pkl`` (the pickled state dict) and one file per tensor storage. It is read
with a restricted unpickler that builds numpy arrays and refuses every other global, so a file cannot run code
(what ``torch.load(weights_only=True)`` guarantees, without importing torch). Legacy (pre-1.6, non-zip) files
are refused with a clear message. ``.safetensors`` is a JSON header and raw little-endian tensors.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

_STORAGES = {"FloatStorage": "<f4", "HalfStorage": "<f2", "DoubleStorage": "<f8", "LongStorage": "<i8",
             "IntStorage": "<i4", "ShortStorage": "<i2", "ByteStorage": "|u1", "CharStorage": "|i1",
             "BoolStorage": "|b1", "BFloat16Storage": "bfloat16"}
_SAFETENSORS = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4", "I16": "<i2", "U8": "|u1",
                "I8": "|i1", "BOOL": "|b1", "BF16": "bfloat16"}


class WeightsError(ValueError):
    """A weights file this reader refuses (the message says why)."""


class _Storage:
    def __init__(self, dtype: str, data: bytes) -> None:
        self.dtype, self.data = dtype, data


def _array(data: bytes, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":  # the upper 16 bits of a float32
        halves = np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16
        return halves.view(np.float32)
    return np.frombuffer(data, dtype=np.dtype(dtype))


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                    *_: Any) -> np.ndarray:
    flat = _array(storage.data, storage.dtype)
    itemsize = flat.dtype.itemsize
    if not size:
        return flat[offset : offset + 1].reshape(()).copy()
    view = np.lib.stride_tricks.as_strided(flat[offset:], shape=size, strides=[s * itemsize for s in stride])
    return np.array(view, dtype=np.float32 if flat.dtype.kind == "f" else flat.dtype)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: Any, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(file)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")):
            return _rebuild_tensor
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch" and name in _STORAGES:
            return name
        raise WeightsError(f"the file holds a {module}.{name} object: only tensors and dicts are read (a "
                           "state dict, as torch.load(weights_only=True) allows)")

    def persistent_load(self, pid: Any) -> _Storage:
        kind, storage_type, key, _location, _numel = pid
        if kind != "storage" or storage_type not in _STORAGES:
            raise WeightsError(f"unsupported tensor storage {storage_type!r}")
        return _Storage(_STORAGES[storage_type], self.archive.read(f"{self.prefix}data/{key}"))


def load_pth(path: Path) -> dict[str, Any]:
    """The pickled object of a torch zip file (a state dict, or a dict holding one), tensors as numpy arrays."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise WeightsError(f"{path}: not a torch zip file (files saved by PyTorch before 1.6 are not read; "
                           "save it again with a current torch, or as .safetensors)")
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
            if len(pickles) != 1:
                raise WeightsError(f"{path}: expected one data.pkl in the archive, found {len(pickles)}")
            prefix = pickles[0][: -len("data.pkl")]
            with archive.open(pickles[0]) as f:
                obj = _Unpickler(f, archive, prefix).load()
    except (pickle.UnpicklingError, EOFError, KeyError, zipfile.BadZipFile, ValueError, TypeError) as exc:
        if isinstance(exc, WeightsError):
            raise
        raise WeightsError(f"{path}: damaged or not a state dict ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    return obj


def load_safetensors(path: Path) -> dict[str, np.ndarray]:
    data = Path(path).read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    body = data[8 + size :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = _SAFETENSORS.get(info["dtype"])
        if dtype is None:
            raise WeightsError(f"{path}: tensor {name} has dtype {info['dtype']}, which is not read")
        array = _array(body[begin:end], dtype).reshape(info["shape"])
        out[name] = array.astype(np.float32) if array.dtype.kind == "f" else array.copy()
    return out


def state_dict(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a ``.pth``/``.pt``/``.safetensors`` file by name; a wrapper (BasicSR's ``params_ema`` or
    ``params``, Lightning's ``state_dict``, and the others spandrel unwraps) is unwrapped (``params_ema`` first: the
    weights a release ships)."""
    path = Path(path)
    obj: dict[str, Any] = load_safetensors(path) if path.suffix == ".safetensors" else load_pth(path)
    for key in ("params_ema", "params-ema", "params", "state_dict", "model_state_dict", "model", "net"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    tensors = {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, np.ndarray)}
    if not tensors:
        raise WeightsError(f"{path}: no tensors found")
    return tensors
