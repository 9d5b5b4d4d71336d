"""What start-up can keep from one process to the next: compiled networks and ``precision auto``'s check.

A small image is dominated by start-up: compiling the network (OpenVINO), and
under ``precision auto`` compiling it twice and running the float32 check on
a probe image. :class:`CompileCache` keeps, in one folder (``<data_dir>/cache``
by default, ``SRGAN_CACHE_DIR``):

- ``openvino/``: OpenVINO's own model cache (``CACHE_DIR``), keyed by OpenVINO
  on the network, the device and the compile options;
- ``onnxruntime/<key>.onnx``: ONNX Runtime's optimized model (its offline
  mode: saved once, then loaded with the graph optimizations off);
- ``rewritten/``: the network with ``model.graph``'s exact rewrites applied;
- ``int8/``: the network quantized to int8 (``model.int8``), keyed by its content, the scheme's version and
  the quantizer (not by the CPU: the graph is the same everywhere, only ``auto``'s decision to use it is not);
- ``precision.json``: ``auto``'s decision (the precision kept and why).

Every key holds the network's content hash, the runtime and its version, and
the CPU (model name and instruction flags): another machine, another runtime
or another file never reuses an entry. numpy-free; no runtime imported here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path

from model.graph import REWRITE_VERSION

log = logging.getLogger(__name__)

_LOCK = threading.Lock()


def content_hash(model: str | Path | bytes) -> str:
    """sha256 of a model file's bytes (or of the bytes themselves)."""
    data = model if isinstance(model, bytes) else Path(model).read_bytes()
    return hashlib.sha256(data).hexdigest()


def machine_key() -> str:
    """The CPU this process runs on: model name and instruction flags (what compiled code depends on)."""
    from model.backends import cpu_flags, cpu_model  # here: model.backends imports this module

    return hashlib.sha256(f"{cpu_model()}|{' '.join(sorted(cpu_flags()))}".encode()).hexdigest()[:16]


class CompileCache:
    """The cache folder (:mod:`module docs <model.compile_cache>`); safe to share between processes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def openvino_dir(self) -> Path:
        path = self.root / "openvino"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def onnxruntime_file(self, model_hash: str, runtime: str, precision: str, providers: list[str]) -> Path:
        key = hashlib.sha256(f"{model_hash}|{runtime}|{precision}|{','.join(providers)}|{machine_key()}".encode())
        folder = self.root / "onnxruntime"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{key.hexdigest()[:32]}.onnx"

    def rewritten_file(self, model_hash: str) -> Path:
        """Where the rewritten graph (``model.graph``) of a network is kept; empty: no rewrite applies."""
        return self.root / "rewritten" / f"{model_hash[:32]}-{REWRITE_VERSION}.onnx"

    def int8_file(self, model_hash: str, quantizer: str) -> Path:
        """Where the int8 graph (``model.int8``) of a network is kept: by its content hash, ``model.int8``'s
        ``SCHEME_VERSION`` and the quantizer (e.g. ``onnxruntime-1.32.0``)."""
        from model.int8 import SCHEME_VERSION  # here: model.int8 imports this module

        key = hashlib.sha256(f"{model_hash}|{SCHEME_VERSION}|{quantizer}".encode()).hexdigest()[:32]
        return self.root / "int8" / f"{key}.onnx"

    def store(self, path: Path, data: bytes) -> None:
        """Write ``data`` to ``path`` atomically (another process may read it at the same time)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        tmp.write_bytes(data)
        tmp.replace(path)

    def _precision_file(self) -> Path:
        return self.root / "precision.json"

    def precision_key(self, model_hash: str, backend: str, runtime: str) -> str:
        return f"{model_hash}|{backend}|{runtime}|{machine_key()}"

    def precision(self, key: str) -> tuple[str, str] | None:
        """``auto``'s cached decision for ``key``: (precision, note), or None."""
        try:
            entry = json.loads(self._precision_file().read_text()).get(key)
        except (OSError, ValueError):
            return None
        return (entry["precision"], entry["note"]) if isinstance(entry, dict) else None

    def remember_precision(self, key: str, precision: str, note: str) -> None:
        """Record ``auto``'s decision (atomically: a temporary file renamed over the old one)."""
        path = self._precision_file()
        with _LOCK:
            try:
                entries = json.loads(path.read_text())
            except (OSError, ValueError):
                entries = {}
            entries[key] = {"precision": precision, "note": note}
            self.store(path, json.dumps(entries, indent=1, sort_keys=True).encode())
