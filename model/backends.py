"""Inference backends: one ONNX file, run by ONNX Runtime or by OpenVINO behind the same interface.

A backend takes a float32 batch in the model's own layout and value range and
returns the model's output; it knows nothing about tiles or images. Both are
safe to call from several threads at once.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from model.compile_cache import CompileCache, content_hash
from model.errors import InferenceError, ModelError, OutOfMemory
from model.graph import rewrite as rewrite_graph

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
PROVIDER_PREFERENCE = (*GPU_PROVIDERS, "CPUExecutionProvider")

PRECISIONS = ("f32", "bf16", "f16", "int8")
"""Arithmetic precisions a backend can be asked for (``auto`` is resolved in ``model.engine``). ``int8``: the
convolutions between the head and the tail in int8 (``model.int8``), the rest in bf16 where the CPU runs it
natively, else f32; where the backend runs it faster than f32 only (``model.int8.int8_units``: AMX-INT8 or
VNNI, or AVX2 with OpenVINO)."""
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
"""/proc/cpuinfo flags of CPUs that run bfloat16 natively (AMX tiles or AVX512-BF16 dot products)."""
_OV_PRECISIONS: dict[str, str] = {"f32": "f32", "bf16": "bf16", "f16": "f16", "float32": "f32", "bfloat16": "bf16",
                                  "float16": "f16"}


class Backend(Protocol):
    name: str
    """e.g. ``onnxruntime:CPUExecutionProvider`` or ``openvino:CPU``."""
    precision: str
    """The precision it actually computes in (``f32``, ``bf16``, ``f16``): what the runtime reports."""
    input_name: str
    input_shape: list[object]
    metadata: dict[str, str]

    working_bytes_per_output_pixel: int
    """Peak working memory of one inference per output pixel (what ``tile="auto"`` sizes tiles by)."""
    cache_window_pixels: int | None
    """The largest window ``tile="auto"`` gives this backend (:data:`CACHE_WINDOW_PIXELS`), None: no limit but the
    memory budget (a GPU; OpenVINO's f32)."""

    def run(self, batch: np.ndarray) -> np.ndarray: ...


# Peak RSS growth of a whole-image run per output pixel, measured with the shipped
# 64-filter SRResNet x4 (64..256 px inputs, bench/README.md): OpenVINO ~620 B,
# ONNX Runtime ~1.1 kB (its arena off). Rounded up a little.
OPENVINO_BYTES_PER_OUTPUT_PIXEL = 640
ORT_BYTES_PER_OUTPUT_PIXEL = 1152
# OpenVINO by (16-bit activations, graph rewritten by model.graph): the slope of peak RSS growth between
# 96x96 and 160x160 inputs (AMD EPYC, AVX512-BF16; bench/README.md): f32 587 B, f32 rewritten 433 B,
# bf16 324 B, bf16 rewritten 234 B. Rounded up a little.
OPENVINO_BYTES_PER_OUTPUT_PIXEL_BY = {(False, False): OPENVINO_BYTES_PER_OUTPUT_PIXEL, (False, True): 480,
                                      (True, False): 352, (True, True): 256}
CACHE_WINDOW_PIXELS = 272 * 272
"""Where a CPU runs windows of at most this many input pixels faster per pixel than larger ones, ``tile=auto``
splits a larger image into such windows (a 256-pixel tile and its overlaps: ``cache_window_pixels``). Measured
with the shipped srresnet_x4 (AMD EPYC, AVX512-BF16/VNNI, 2 threads; bench/README.md), whole image against
256-pixel tiles: OpenVINO int8 1.09x (512x384) and 1.10x (1024x768) faster tiled, bf16 1.01x and 1.08x, ONNX
Runtime f32 1.14x; but OpenVINO f32 0.87x (slower tiled): its f32 runs whole."""


def cache_window(device: str, precision: str, flags: set[str]) -> int | None:
    """The largest window ``tile="auto"`` gives OpenVINO on ``device`` at ``precision`` (None: the memory budget
    alone): :data:`CACHE_WINDOW_PIXELS` for bf16 on a CPU, and for int8 on a CPU with AMX-INT8, whose 256-pixel
    tiles kept pace with the whole image although they recompute 6% more pixels (tiled/whole 0.98-1.02 at
    512x512, Intel Xeon). With VNNI and no AMX (AMD EPYC) int8 takes the same time per pixel in windows of 264
    as of 520 (6.63 and 6.56 s per input MP, scheme 2; bench/README.md), so windows that small only add the
    recomputed overlaps there; f32 runs slower in them (above)."""
    if device != "CPU" or precision == "f32" or (precision == "int8" and "amx_int8" not in flags):
        return None
    return CACHE_WINDOW_PIXELS


_OOM_MARKERS = ("bad_alloc", "bad allocation", "out of memory", "failed to allocate", "cannot allocate", "alloc_failed",
                "cudaerrormemoryallocation", "memoryerror")


def inference_error(runtime: str, batch: np.ndarray, exc: BaseException) -> InferenceError:
    """The typed error for a failed run: ``OutOfMemory`` when the runtime ran out of memory."""
    text = f"{runtime} failed on a batch of shape {batch.shape}: {exc}"
    if isinstance(exc, MemoryError) or any(m in str(exc).lower() for m in _OOM_MARKERS):
        return OutOfMemory(text)
    return InferenceError(text)


def default_threads() -> int:
    """One inference thread per CPU this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``unknown`` where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return "unknown"


MEMORY_BUDGET_FRACTION = 0.25
MEMORY_BUDGET_CAP = 2**30
"""The default tile memory budget: a quarter of the available memory, at most 1 GiB. Beyond ~260-pixel
tiles throughput does not grow (bench/README.md) and the cap keeps a 2048x2048 input under 1.5 GB."""


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where there is none)."""
    try:
        with open("/proc/meminfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def default_memory_budget() -> int:
    """Bytes of working memory ``tile="auto"`` may use: min(1 GiB, a quarter of the available memory)."""
    avail = available_memory()
    return MEMORY_BUDGET_CAP if avail is None else max(64 * 2**20, min(MEMORY_BUDGET_CAP,
                                                                        int(avail * MEMORY_BUDGET_FRACTION)))


GPU_MEMORY_BUDGET_FRACTION = 0.5
"""The default tile memory budget on a GPU: half its free memory (the rest for the runtime's own buffers,
kernels' workspaces and other processes on the same GPU)."""


def is_gpu_backend(backend_name: str) -> bool:
    """Whether a loaded backend (its ``name``) runs on a GPU: ONNX Runtime's CUDA/TensorRT, OpenVINO's GPU."""
    runtime, _, device = backend_name.partition(":")
    return device in GPU_PROVIDERS if runtime == "onnxruntime" else runtime == "openvino" and device.startswith("GPU")


def visible_gpu(env: dict[str, str] | None = None) -> str:
    """The GPU a CUDA process uses first, as ``nvidia-smi --id`` takes it: the first entry of
    ``CUDA_VISIBLE_DEVICES`` (an index or a ``GPU-...`` UUID), else ``0``."""
    env = dict(os.environ) if env is None else env
    first = env.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return first or "0"


def parse_free_mib(text: str) -> int | None:
    """Bytes from the first line of ``nvidia-smi --query-gpu=memory.free --format=csv,noheader,nounits``."""
    for line in text.splitlines():
        line = line.strip()
        if line:
            try:
                return int(float(line)) * 2**20
            except ValueError:
                return None
    return None


def gpu_free_memory(gpu: str | None = None) -> int | None:
    """Free memory of ``gpu`` (default :func:`visible_gpu`) in bytes, from ``nvidia-smi``; None without it."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        res = subprocess.run(["nvidia-smi", f"--id={gpu or visible_gpu()}", "--query-gpu=memory.free",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_free_mib(res.stdout) if res.returncode == 0 else None


def device_memory_budget(backend_name: str, *, free: int | None = None) -> int | None:
    """Bytes the network's working memory may take on the backend's GPU (``GPU_MEMORY_BUDGET_FRACTION`` of its
    free memory, ``free`` or :func:`gpu_free_memory`); None on a CPU or when the free memory is unknown."""
    if not is_gpu_backend(backend_name):
        return None
    free = gpu_free_memory() if free is None else free
    return None if not free else max(64 * 2**20, int(free * GPU_MEMORY_BUDGET_FRACTION))


def runtime(name: str) -> Any:  # noqa: ANN401 - the runtimes' modules are untyped here
    """The inference runtime ``name`` (``onnxruntime`` or ``openvino``), imported on first use: each is an optional
    extra (cpu/gpu, openvino), and ``srgan`` starts without either. Raises ImportError when it is not installed."""
    if name not in ("onnxruntime", "openvino"):
        raise ValueError(f"unknown runtime {name!r}")
    if name == "openvino" and name not in sys.modules:
        return _import_openvino()
    return importlib.import_module(name)


OPENVINO_CONVERTER = "openvino.tools.ovc"
"""OpenVINO's model converter, which ``import openvino`` loads (for ``openvino.convert_model``) with its telemetry,
absl and urllib: about 0.1 s of a 0.2 s import on a quiet AMD EPYC, 2 vCPU (bench/README.md, start-up). The engine
reads ONNX files through ``Core.read_model`` and never converts."""


_OPENVINO_IMPORT = threading.Lock()


def _import_openvino() -> Any:  # noqa: ANN401 - the openvino module, untyped here
    """``import openvino`` without its model converter: the package's ``__init__`` imports it in a ``try`` that
    skips it on ImportError, which a ``None`` entry in ``sys.modules`` raises for that one import. The entry goes
    away afterwards, so an explicit ``from openvino.tools.ovc import ...`` still works, and ``openvino.convert_model``
    is resolved on first use (a module ``__getattr__``, PEP 562) for anyone in the process who asks for it."""
    with _OPENVINO_IMPORT:  # engines load in threads: one import, one block at a time
        blocked = OPENVINO_CONVERTER not in sys.modules and "openvino" not in sys.modules
        if blocked:
            sys.modules[OPENVINO_CONVERTER] = None  # type: ignore[assignment] # the documented way to fail an import
        try:
            ov = importlib.import_module("openvino")
        finally:
            if blocked and sys.modules.get(OPENVINO_CONVERTER, False) is None:
                del sys.modules[OPENVINO_CONVERTER]
    if not hasattr(ov, "convert_model") and "__getattr__" not in vars(ov):
        def lazy(attr: str) -> Any:  # noqa: ANN401 - whatever the converter module holds
            if attr == "convert_model":
                value = importlib.import_module(OPENVINO_CONVERTER).convert_model
                setattr(ov, "convert_model", value)  # noqa: B010 - the module's own attribute from now on
                return value
            raise AttributeError(f"module 'openvino' has no attribute {attr!r}")

        setattr(ov, "__getattr__", lazy)  # noqa: B010 - a module __getattr__ (PEP 562)
    return ov


def openvino_capabilities(device: str = "CPU") -> list[str]:
    """OpenVINO's OPTIMIZATION_CAPABILITIES for ``device`` (e.g. ``FP32``, ``BF16``, ``INT8``); empty without it."""
    try:
        return list(runtime("openvino").Core().get_property(device, "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # not installed, or no such device
        return []


def native_precision(backend_name: str, *, flags: set[str] | None = None,
                     capabilities: list[str] | None = None) -> str:
    """The fastest precision ``backend_name`` (a loaded backend's ``name``) runs natively.

    OpenVINO on a CPU: ``bf16`` when the CPU has AMX or AVX512-BF16 (``/proc/cpuinfo``)
    and OpenVINO lists ``BF16`` among its capabilities, else ``f32`` (a CPU without
    them emulates bfloat16, slower than float32; float16 was slower than float32
    even on AMX CPUs). ONNX Runtime: ``f16`` on a GPU provider, else ``f32``.
    """
    runtime, _, device = backend_name.partition(":")
    if runtime == "openvino":
        if device != "CPU":
            return "f16"
        flags = cpu_flags() if flags is None else flags
        caps = openvino_capabilities(device) if capabilities is None else capabilities
        return "bf16" if any(f in flags for f in BF16_CPU_FLAGS) and "BF16" in caps else "f32"
    return "f16" if device in GPU_PROVIDERS else "f32"


def _check_precision(precision: str, backend: str) -> None:
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}: use auto, {', '.join(PRECISIONS)}")
    if precision == "int8":
        check_int8_cpu(backend=backend)


def check_int8_cpu(flags: set[str] | None = None, backend: str = "openvino") -> None:
    """ModelError unless ``backend`` (``openvino``, ``onnxruntime``) runs int8 faster than float32 on the CPU
    (``flags``, default /proc/cpuinfo's; :func:`model.int8.int8_units`): elsewhere int8 would be slower."""
    from model.int8 import INT8_CPU_FLAGS, int8_native

    flags = cpu_flags() if flags is None else flags
    if not int8_native(flags, backend):
        units = ", ".join(INT8_CPU_FLAGS) + ("; or avx2 with OpenVINO" if backend == "openvino" else "")
        raise ModelError(f"int8 needs a CPU with int8 units ({units}): on this CPU ({cpu_model()}) {backend} runs "
                         "int8 slower than float32; use --precision auto, bf16 or f32"
                         + ("" if backend == "openvino" or not int8_native(flags) else
                            ", or the openvino backend, which runs int8 faster here"))


def rewritten_model(path: Path, cache: CompileCache | None = None) -> bytes | None:
    """``path`` with the exact rewrites of ``model.graph`` applied, or None when none applies (load the file).

    With a ``cache``, the rewritten graph of an earlier process (keyed by the file's content) is read back.
    """
    saved = cache.rewritten_file(content_hash(path)) if cache is not None else None
    if saved is not None and saved.is_file():
        data = saved.read_bytes()
        return data or None  # empty: no rewrite applies to this network
    import onnx  # start-up: only where the cache has no rewritten graph yet

    try:
        proto = onnx.load(str(path))
    except Exception as exc:
        raise ModelError(f"cannot read ONNX model {path}: {exc}") from exc
    try:
        rewritten = proto.SerializeToString() if rewrite_graph(proto) else None
    except Exception as exc:  # a graph the rewrite did not foresee: run it as it is
        log.warning("%s: graph rewrite skipped: %s", path, exc)
        return None
    if cache is not None and saved is not None:
        cache.store(saved, rewritten or b"")
    return rewritten


def float16_model(path: Path, rewritten: bytes | None) -> bytes:
    """``path`` (or its ``rewritten`` graph, see :func:`rewritten_model`) converted to float16 inside, float32
    at its input and output (ONNX Runtime's converter)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16  # optional: the cpu or gpu extra

    try:
        import onnx

        proto = onnx.load(str(path)) if rewritten is None else onnx.load_from_string(rewritten)
        return convert_float_to_float16(proto, keep_io_types=True).SerializeToString()
    except Exception as exc:
        raise ModelError(f"cannot convert {path} to float16: {exc}") from exc


class OrtBackend:
    """ONNX Runtime. Providers: the given list, else TensorRT, CUDA, then CPU, whichever exist.

    ``precision="f16"``: TensorRT builds float16 engines from the float32 model
    (``trt_fp16_enable``); other providers run a float16 conversion of the model.
    ``bf16`` is OpenVINO's.
    """

    def __init__(self, path: Path, *, providers: list[str] | None = None, threads: int = 0,
                 precision: str = "f32", rewrite: bool = True, cache: CompileCache | None = None) -> None:
        ort = runtime("onnxruntime")
        _check_precision(precision, "onnxruntime")
        if precision == "bf16":
            raise ModelError("bf16 is not offered with ONNX Runtime: use the openvino backend, or f16/f32")

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
        if precision == "int8" and chosen and chosen[0] in GPU_PROVIDERS:
            raise ModelError("int8 is offered on the CPU only: use f16 or f32 on a GPU")
        rewritten = rewritten_model(path, cache) if rewrite else None
        model: str | bytes = str(path) if rewritten is None else rewritten
        provider_args: list = list(chosen)
        if precision == "int8":
            from model.int8 import int8_model

            model = int8_model(path, rewritten, cache)
        if precision == "f16":
            if chosen and chosen[0] == "TensorrtExecutionProvider":
                provider_args[0] = ("TensorrtExecutionProvider", {"trt_fp16_enable": True})
            else:
                model = float16_model(path, rewritten)
        saved = None
        if cache is not None and chosen == ["CPUExecutionProvider"]:
            # offline mode: the optimized graph saved once, then loaded with the optimizations off
            saved = cache.onnxruntime_file(content_hash(model), f"onnxruntime-{ort.__version__}", precision, chosen)
            if saved.is_file():
                model, opts.graph_optimization_level = str(saved), ort.GraphOptimizationLevel.ORT_DISABLE_ALL
                saved = None
            else:
                opts.optimized_model_filepath = str(saved.with_name(f".{saved.name}.{os.getpid()}"))
        try:
            self._session = ort.InferenceSession(model, sess_options=opts, providers=provider_args)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"cannot load ONNX model {path}: {exc}") from exc
        if saved is not None:
            Path(opts.optimized_model_filepath).replace(saved)
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
        self.precision = precision
        self.working_bytes_per_output_pixel = ORT_BYTES_PER_OUTPUT_PIXEL
        self.cache_window_pixels = CACHE_WINDOW_PIXELS if got[0] == "CPUExecutionProvider" else None
        log.info("loaded %s on %s (threads=%d, %s)", path, got, opts.intra_op_num_threads, precision)

    def run(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self._session.run(None, {self.input_name: batch})[0]
        except Exception as exc:
            raise inference_error("ONNX Runtime", batch, exc) from exc


class OpenVinoBackend:
    """OpenVINO on the CPU, reading the same ONNX file, at the precision asked for (INFERENCE_PRECISION_HINT).

    A device that lacks the precision may run another one (OpenVINO on a CPU
    without float16 units runs ``f16`` in float32): ``precision`` is what the
    compiled model reports, not what was asked.
    """

    def __init__(self, path: Path, *, threads: int = 0, device: str = "CPU", precision: str = "f32",
                 rewrite: bool = True, cache: CompileCache | None = None) -> None:
        ov = runtime("openvino")
        _check_precision(precision, "openvino")
        core = ov.Core()
        if cache is not None:  # OpenVINO's own cache of compiled networks, keyed by network, device and options
            core.set_property({"CACHE_DIR": str(cache.openvino_dir())})
        try:
            rewritten = rewritten_model(path, cache) if rewrite else None
            source: str | bytes = str(path) if rewritten is None else rewritten
            hint = precision
            if precision == "int8":
                from model.int8 import int8_model

                source = int8_model(path, rewritten, cache)
                hint = "bf16" if device == "CPU" and native_precision("openvino:CPU") == "bf16" else "f32"
            model = core.read_model(source)
            self._to_nhwc = rewrite and device == "CPU" and _drop_final_transpose(model)
            config: dict[str, str | int] = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
            if threads:
                config["INFERENCE_NUM_THREADS"] = threads
            self._compiled = core.compile_model(model, device, config)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"OpenVINO cannot load {path}: {exc}") from exc
        inputs = self._compiled.inputs
        if len(inputs) != 1:
            raise ModelError(f"{path}: expected one image input, found {len(inputs)}")
        self.input_name = inputs[0].get_any_name()
        self.input_shape = [d.get_length() if d.is_static else None for d in inputs[0].get_partial_shape()]
        self.metadata = _openvino_metadata(model)
        self._runs = 0  # runs in flight (release_memory waits for none)
        self._runs_lock = threading.Lock()
        self.name = f"openvino:{device}"
        ov_hint = self._compiled.get_property("INFERENCE_PRECISION_HINT")  # an ov.Type
        got = ov_hint.get_type_name() if hasattr(ov_hint, "get_type_name") else str(ov_hint).lower()
        self.float_precision = _OV_PRECISIONS.get(got, got)
        """What the layers that are not int8 compute in (all of them unless ``precision`` is ``int8``)."""
        self.precision = "int8" if precision == "int8" else self.float_precision
        self.rewritten = rewritten is not None
        # int8: not measured separately; its activations are at most as wide as bf16's
        self.working_bytes_per_output_pixel = OPENVINO_BYTES_PER_OUTPUT_PIXEL_BY[(self.float_precision != "f32",
                                                                                  self.rewritten)]
        self.cache_window_pixels = cache_window(device, self.precision, cpu_flags())
        if self.float_precision != hint:
            log.warning("asked OpenVINO on %s for %s; it runs %s", device, hint, self.float_precision)
        log.info("loaded %s with OpenVINO on %s (%s)", path, device, self.precision)

    def run(self, batch: np.ndarray) -> np.ndarray:
        with self._runs_lock:
            self._runs += 1
        try:
            request = self._compiled.create_infer_request()  # one per call: thread-safe
            request.infer({0: batch})
            out = request.get_output_tensor(0).data
            # the copy that outlives the request, in the layout the graph's dropped last transpose made
            return np.ascontiguousarray(out.transpose(0, 2, 3, 1)) if self._to_nhwc else out.copy()
        except Exception as exc:
            raise inference_error("OpenVINO", batch, exc) from exc
        finally:
            with self._runs_lock:
                self._runs -= 1

    def release_memory(self) -> bool:
        """Give back the intermediate buffers OpenVINO keeps after a run (``CompiledModel.release_memory``; the
        next run makes them again): about 0.3 GB per network after a 1024x1024 image, which every idle engine of
        a worker's cache would otherwise hold (bench/README.md). Not while a run is in flight: False then."""
        with self._runs_lock:
            if self._runs:
                return False
            self._compiled.release_memory()
            return True


def _drop_final_transpose(model: Any) -> bool:  # noqa: ANN401 - an ov.Model
    """Removes, in place, a last ``Transpose`` NCHW -> NHWC before the model's only output (tf2onnx's, of a Keras
    NHWC generator) and returns True: the caller transposes the output as it copies it out of the request.
    OpenVINO ran that transpose with its reference kernel (``unknown_f32``), 11 ms of a 130 ms int8 run of a
    256x256 input on an AMX Xeon, against about 2 ms for numpy's transposing copy (bench/README.md)."""
    results = model.get_results()
    if len(results) != 1:
        return False
    node = results[0].input_value(0).get_node()
    if node.get_type_name() != "Transpose" or len(node.output(0).get_target_inputs()) != 1:
        return False
    perm = node.input_value(1).get_node()
    if perm.get_type_name() != "Constant" or [int(v) for v in perm.get_data().ravel()] != [0, 2, 3, 1]:
        return False
    names = results[0].input_value(0).get_names()
    results[0].input(0).replace_source_output(node.input_value(0))
    if names:  # the output keeps its name (``hr``)
        results[0].input_value(0).get_tensor().add_names(names)
    model.validate_nodes_and_infer_types()
    return True


def _openvino_metadata(model: Any) -> dict[str, str]:  # noqa: ANN401 - an ov.Model
    """The ONNX file's ``metadata_props`` as OpenVINO's ONNX reader keeps them (``rt_info["framework"]``; the
    rewritten and int8 graphs carry the file's): no second parse of the file, no onnx import."""
    info = model.get_rt_info()
    framework = info["framework"] if "framework" in info else {}
    return {str(k): v.astype(str) for k, v in framework.items()}


def openvino_available() -> bool:
    try:
        runtime("openvino")
    except ImportError:
        return False
    return True


GPU_PROVIDER_LIBRARIES = ("onnxruntime_providers_cuda", "onnxruntime_providers_tensorrt")
"""The shared libraries of :data:`GPU_PROVIDERS` that a GPU build of ONNX Runtime ships beside its Python
module (``capi/lib*.so``, ``capi/*.dll``); the CPU build has neither."""


def ort_gpu_build(capi: Path | None = None) -> bool:
    """Whether the installed ONNX Runtime (``capi``: its ``capi`` folder, found without importing it) is a build
    with a GPU provider. Start-up: looking at its files costs nothing; importing it costs 25-45 ms, which a
    ``backend=auto`` start on a CPU build paid only to learn it has no GPU provider."""
    if capi is None:
        spec = importlib.util.find_spec("onnxruntime")
        if spec is None or not spec.submodule_search_locations:
            return False
        capi = Path(next(iter(spec.submodule_search_locations))) / "capi"
    try:
        names = [entry.name for entry in capi.iterdir()]
    except OSError:
        return False
    return any(lib in name for name in names for lib in GPU_PROVIDER_LIBRARIES)


def gpu_available() -> bool:
    if not ort_gpu_build():
        return False
    try:
        ort = runtime("onnxruntime")
    except ImportError:
        return False
    return any(p in ort.get_available_providers() for p in GPU_PROVIDERS)


def resolve_backend(backend: str, providers: list[str] | None) -> str:
    """``auto``: ONNX Runtime when providers are given or a GPU provider exists, else OpenVINO when it is
    installed, else ONNX Runtime."""
    if backend == "auto":
        return "onnxruntime" if providers or gpu_available() or not openvino_available() else "openvino"
    return backend


def runtime_version(backend: str) -> str:
    """The runtime and its version a backend name means (part of every compile cache key)."""
    if backend == "openvino":
        return f"openvino-{runtime('openvino').get_version()}"
    return f"onnxruntime-{_ort_version()}"


ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml")
"""The PyPI distributions that install the ``onnxruntime`` package (the CPU build and the others)."""


def _ort_version() -> str:
    """The installed ONNX Runtime's version, read from its distribution's metadata where one is installed: the
    int8 cache key needs it (ONNX Runtime quantizes), and a warm OpenVINO start would otherwise import ONNX
    Runtime (25-45 ms) only to read its ``__version__``."""
    from importlib import metadata

    for dist in ORT_DISTRIBUTIONS:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return str(runtime("onnxruntime").__version__)


def open_backend(
    path: Path, *, backend: str = "auto", providers: list[str] | None = None, threads: int = 0,
    precision: str = "f32", rewrite: bool = True, cache: CompileCache | None = None,
) -> Backend:
    """Load ``path`` with the chosen backend at ``precision`` (``f32``, ``bf16``, ``f16``, ``int8``: see
    :data:`PRECISIONS`; ``int8`` quantizes the network once, kept in ``cache``).

    ``rewrite``: apply the exact graph rewrites of ``model.graph`` (faster, same function; see
    :func:`rewritten_model`).

    ``auto``: ONNX Runtime when providers are given or a GPU provider exists,
    else OpenVINO when it is installed (faster on this class of CPU, see
    bench/engine.py), else ONNX Runtime on the CPU.
    """
    backend = resolve_backend(backend, providers)
    if backend == "openvino":
        return OpenVinoBackend(path, threads=threads, precision=precision, rewrite=rewrite, cache=cache)
    if backend == "onnxruntime":
        return OrtBackend(path, providers=providers, threads=threads, precision=precision, rewrite=rewrite,
                          cache=cache)
    raise ModelError(f"unknown backend {backend!r}: use auto, onnxruntime or openvino")
