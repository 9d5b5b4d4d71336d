"""Inference backends: one ONNX file, run by ONNX Runtime or by OpenVINO behind the same interface.

A backend takes a float32 batch in the model's own layout and value range and
returns the model's output; it knows nothing about tiles or images. Both are
safe to call from several threads at once.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Protocol

import numpy as np

from model.errors import InferenceError, ModelError

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
PROVIDER_PREFERENCE = (*GPU_PROVIDERS, "CPUExecutionProvider")


class Backend(Protocol):
    name: str
    """e.g. ``onnxruntime:CPUExecutionProvider`` or ``openvino:CPU``."""
    input_name: str
    input_shape: list[object]
    metadata: dict[str, str]

    def run(self, batch: np.ndarray) -> np.ndarray: ...


def default_threads() -> int:
    """One inference thread per CPU this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class OrtBackend:
    """ONNX Runtime. Providers: the given list, else TensorRT, CUDA, then CPU, whichever exist."""

    def __init__(self, path: Path, *, providers: list[str] | None = None, threads: int = 0) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        if providers:
            missing = [p for p in providers if p not in available]
            if missing:
                raise ModelError(f"ONNX Runtime providers not available here: {missing} (available: {available})")
            chosen = list(providers)
        else:
            chosen = [p for p in PROVIDER_PREFERENCE if p in available]
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or default_threads()
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # The arena keeps the peak of every tile shape ever seen; without it a
        # whole 512x512 image peaks at 3.3 GB instead of 7.6 GB (bench/engine.py).
        opts.enable_cpu_mem_arena = False
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(path), sess_options=opts, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"cannot load ONNX model {path}: {exc}") from exc
        got = self._session.get_providers()
        if chosen and got[0] != chosen[0]:
            log.warning("asked for %s, ONNX Runtime gave %s", chosen[0], got[0])
        inp = self._session.get_inputs()
        if len(inp) != 1:
            raise ModelError(f"{path}: expected one image input, found {len(inp)}")
        self.input_name = inp[0].name
        self.input_shape = list(inp[0].shape)
        self.metadata = dict(self._session.get_modelmeta().custom_metadata_map)
        self.name = f"onnxruntime:{got[0]}"
        log.info("loaded %s on %s (threads=%d)", path, got, opts.intra_op_num_threads)

    def run(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self._session.run(None, {self.input_name: batch})[0]
        except Exception as exc:
            raise InferenceError(f"ONNX Runtime failed on a batch of shape {batch.shape}: {exc}") from exc


class OpenVinoBackend:
    """OpenVINO on the CPU, reading the same ONNX file; float32 precision is forced."""

    def __init__(self, path: Path, *, threads: int = 0, device: str = "CPU") -> None:
        import onnx
        import openvino as ov

        core = ov.Core()
        try:
            model = core.read_model(str(path))
            config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
            if threads:
                config["INFERENCE_NUM_THREADS"] = threads
            self._compiled = core.compile_model(model, device, config)
        except Exception as exc:
            raise ModelError(f"OpenVINO cannot load {path}: {exc}") from exc
        inputs = self._compiled.inputs
        if len(inputs) != 1:
            raise ModelError(f"{path}: expected one image input, found {len(inputs)}")
        self.input_name = inputs[0].get_any_name()
        self.input_shape = [d.get_length() if d.is_static else None for d in inputs[0].get_partial_shape()]
        proto = onnx.load(str(path), load_external_data=False)
        self.metadata = {p.key: p.value for p in proto.metadata_props}
        self.name = f"openvino:{device}"
        log.info("loaded %s with OpenVINO on %s", path, device)

    def run(self, batch: np.ndarray) -> np.ndarray:
        try:
            request = self._compiled.create_infer_request()  # one per call: thread-safe
            request.infer({0: batch})
            return request.get_output_tensor(0).data.copy()
        except Exception as exc:
            raise InferenceError(f"OpenVINO failed on a batch of shape {batch.shape}: {exc}") from exc


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def gpu_available() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return any(p in ort.get_available_providers() for p in GPU_PROVIDERS)


def open_backend(
    path: Path, *, backend: str = "auto", providers: list[str] | None = None, threads: int = 0
) -> Backend:
    """Load ``path`` with the chosen backend.

    ``auto``: ONNX Runtime when providers are given or a GPU provider exists,
    else OpenVINO when it is installed (faster on this class of CPU, see
    bench/engine.py), else ONNX Runtime on the CPU.
    """
    if backend == "auto":
        backend = "onnxruntime" if providers or gpu_available() or not openvino_available() else "openvino"
    if backend == "openvino":
        return OpenVinoBackend(path, threads=threads)
    if backend == "onnxruntime":
        return OrtBackend(path, providers=providers, threads=threads)
    raise ModelError(f"unknown backend {backend!r}: use auto, onnxruntime or openvino")
