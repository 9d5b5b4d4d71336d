"""int8: post-training quantization of a generator into an ONNX QDQ graph, its sensitive parts kept in float.

Plain post-training int8 of SRResNet cost 0.35-1.72 dB on Set5/Set14 (bench/README.md, "int8"). The
scheme here keeps in float what carries the picture rather than the detail:

- the *head*: every convolution with no other convolution between it and the graph's input (the 9x9 head,
  and the bicubic skip's convolutions of a model that has one);
- the *tail* (no convolution between it and the graph's output: the 9x9 tail or its sub-pixel rewrite by
  ``model.graph``) is quantized since scheme 2, but its output stays float and its input is uint8 with a zero
  point over the *extremes* of the calibration images (the other activations: int8 over averaged ranges). In
  scheme 1 it ran in bfloat16, about a fifth of the int8 run, and its input convolution could not use AMX's
  brgemm kernel: on an AMX Xeon the network ran at 1.58x bfloat16 in scheme 2 against 1.22x in scheme 1, at
  the same quality (bench/README.md, with the whole engine's 1.72x). Averaged ranges clipped a screenshot's tail
  input (Set14 ppt3 0.18 dB), symmetric int8 over the extremes was too coarse (the probe's mean 0.056 dB);
- every residual sum and the global skip: only ``Conv`` nodes are quantized, so ``Add`` (and PReLU, the
  pixel shuffles, tanh) run in float, or bfloat16 where the runtime runs the rest of the graph in it;
- weights per output channel, symmetric; activations per tensor, symmetric (no zero point: OpenVINO then
  fuses each residual sum into its int8 convolution; with uint8 and a zero point it inserted a subtraction
  after every convolution and ran slower than bfloat16), their ranges the min/max of each calibration image
  averaged over the images (the extremes of them all cost srgan_x4 0.08 dB on Set5, the average 0.04).

The quantized graph is an ordinary ONNX file (QuantizeLinear/DequantizeLinear pairs around each
quantized convolution's input and weights) built with ONNX Runtime's quantization tool, which the CPU
extra already installs: OpenVINO reads it as int8 (FakeQuantize, int8 kernels on AMX-INT8 and VNNI
CPUs) and ONNX Runtime runs it as it is. No NNCF at run time (``srgan bench int8`` compares with it).

Calibration at run time is on :func:`calibration_images`: deterministic synthetic images (dead leaves:
random occluding discs of random colour and size, the classic stand-in for natural image statistics,
with texture and noise), so the service needs no image data of its own; bench/README.md has what real
training crops gave instead. The quantized graph is kept in the compile cache (``model.compile_cache``),
keyed by the network, :data:`SCHEME_VERSION` and the CPU.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model.backends import runtime_version
from model.compile_cache import CompileCache, content_hash
from model.contract import ModelContract, infer_layout
from model.errors import ModelError

if TYPE_CHECKING:  # start-up: onnx only to quantize (an int8 graph in the compile cache is read back without it)
    import onnx

log = logging.getLogger(__name__)

INT8_CPU_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")
"""/proc/cpuinfo flags of CPUs with int8 dot-product units (AMX tiles, AVX512-VNNI, AVX-VNNI): int8 pays with
either runtime."""
INT8_OPENVINO_FLAGS = (*INT8_CPU_FLAGS, "avx2")
"""...and where it pays with OpenVINO: its CPU plugin also runs int8 convolutions on AVX2's u8 x s8 multiply-add
(``vpmaddubsw``). Measured on an AVX2-only AMD EPYC (no VNNI, no AVX512; bench/README.md): the shipped srresnet_x4
in int8 1.32x float32 with OpenVINO (Set5 0.028 dB mean / 0.075 worst, Set14 0.017 / 0.081), but 0.89x with ONNX
Runtime, whose int8 kernels need VNNI to pay."""
SCHEME_VERSION = 2
"""Bumped whenever the scheme or the calibration set changes what :func:`quantize` makes (part of the cache key)."""
SCHEME = ("int8 QDQ (ONNX Runtime quantize_static): convolutions only, weights per-channel symmetric int8, "
          "activations per-tensor symmetric int8 (min/max averaged over the calibration images), the tail's input "
          "uint8 over the extremes and its output float, head convolutions and every sum kept in float")
"""How :func:`quantize` quantizes, in words (for model cards and the model listing)."""
SCHEME_SHORT = (f"int8 scheme {SCHEME_VERSION}: convolutions after the head int8 (the tail's input uint8), head and "
                "sums float, synthetic calibration")
""":data:`SCHEME` in a few words, for ``auto``'s note (what ``srgan models`` and ``GET /v1/models`` show)."""
CALIBRATION_COUNT = 32
CALIBRATION_SIZE = 64
"""Calibration images at run time: :data:`CALIBRATION_COUNT` synthetic images of this side (input pixels)."""


def int8_units(flags: Iterable[str], backend: str = "openvino") -> str | None:
    """The best unit by which ``backend`` (``openvino`` or ``onnxruntime``) runs int8 faster than float32 on a CPU
    with these /proc/cpuinfo ``flags``: ``amx_int8``, ``avx512_vnni``, ``avx_vnni``, ``avx2`` (OpenVINO only), or
    None."""
    have = set(flags)
    return next((f for f in (INT8_OPENVINO_FLAGS if backend == "openvino" else INT8_CPU_FLAGS) if f in have), None)


def int8_native(flags: Iterable[str], backend: str = "openvino") -> bool:
    """Whether ``backend`` runs int8 faster than float32 on a CPU with these flags (see :func:`int8_units`)."""
    return int8_units(flags, backend) is not None


def protected_convs(proto: onnx.ModelProto, ends: Iterable[str] = ("head", "tail")) -> list[str]:
    """Names (an unnamed node: its first output's) of the convolutions kept in float: with ``"head"`` in
    ``ends``, those with no convolution between them and a graph input (the head, a bicubic skip); with
    ``"tail"``, those with none between them and a graph output (the tail)."""
    ends = set(ends)
    g = proto.graph
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    inputs = {i.name for i in g.input} - {t.name for t in g.initializer}
    outputs = {o.name for o in g.output}

    def up(n: onnx.NodeProto) -> list[onnx.NodeProto]:
        return [producer[i] for i in n.input if i in producer]

    def down(n: onnx.NodeProto) -> list[onnx.NodeProto]:
        return [c for o in n.output for c in consumers.get(o, [])]

    def source(n: onnx.NodeProto) -> bool:  # reads a graph input, or only constants (e.g. Shape's ones_like)
        return any(i in inputs for i in n.input) or not up(n)

    def sink(n: onnx.NodeProto) -> bool:
        return any(o in outputs for o in n.output)

    def reaches(start: onnx.NodeProto, step: Callable[[onnx.NodeProto], list[onnx.NodeProto]],
                end: Callable[[onnx.NodeProto], bool]) -> bool:
        """Whether ``end`` holds at ``start`` or at a node reached by ``step`` without passing a convolution."""
        if end(start):
            return True
        seen: set[int] = set()
        todo = step(start)
        while todo:
            n = todo.pop()
            if id(n) in seen or n.op_type == "Conv":
                continue
            seen.add(id(n))
            if end(n):
                return True
            todo.extend(step(n))
        return False

    return [n.name or n.output[0] for n in g.node
            if n.op_type == "Conv" and (("head" in ends and reaches(n, up, source))
                                        or ("tail" in ends and reaches(n, down, sink)))]


def _unquantize_outputs(proto: onnx.ModelProto, convs: Iterable[str]) -> int:
    """Removes the QuantizeLinear -> DequantizeLinear pair ONNX Runtime's quantizer puts on the output of each
    convolution in ``convs`` (a tail: its output is the picture, and rounding it to 255 steps of its range is
    what int8 must not do). Returns how many pairs it removed."""
    g = proto.graph
    names = set(convs)
    outs = {o for n in g.node if n.op_type == "Conv" and n.name in names for o in n.output}
    graph_outputs = {o.name for o in g.output}
    drop, rename = [], {}
    for q in g.node:
        if q.op_type != "QuantizeLinear" or q.input[0] not in outs:
            continue
        dqs = [n for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0]]
        if len(dqs) != 1 or any(q.output[0] in n.input for n in g.node if n is not dqs[0]):
            continue
        if dqs[0].output[0] in graph_outputs:  # a graph output keeps its name: the pair stays (not seen)
            continue
        drop += [q, dqs[0]]
        rename[dqs[0].output[0]] = q.input[0]
    for n in drop:
        g.node.remove(n)
    for n in g.node:
        for i, name in enumerate(n.input):
            if name in rename:
                n.input[i] = rename[name]
    return len(drop) // 2


def calibration_images(count: int = CALIBRATION_COUNT, size: int = CALIBRATION_SIZE, seed: int = 0) -> list[np.ndarray]:
    """``count`` deterministic ``size x size`` RGB uint8 images with the statistics of downscaled photos.

    Dead leaves: discs of random colour painted over each other, radii from a power law (scale-invariant
    like natural images), each disc filled with a 1/f noise texture of random strength (fur, foliage,
    grain) over a smooth shading; colours of moderate saturation (a luminance plus a little chroma), a
    slight blur and mild noise, as a photo downscaled by a super-resolution model's factor looks.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    out = []
    for _ in range(count):
        textures = [_pink_noise(size, rng) for _ in range(3)]
        img = np.empty((size, size, 3), np.float32)
        img[:] = _colour(rng)
        for _ in range(int(rng.integers(15, 60))):
            r = float(np.clip(size / 2 * rng.uniform(0.05, 1.0) ** 2, 1.5, size))
            cy, cx = rng.uniform(-r / 2, size + r / 2, 2)
            mask = (y - cy) ** 2 + (x - cx) ** 2 <= r * r
            tex = textures[int(rng.integers(3))][mask] * rng.uniform(0, 35)
            ramp = ((x - cx) * rng.normal() + (y - cy) * rng.normal())[mask] * rng.uniform(0, 40) / size
            img[mask] = _colour(rng) + (tex + ramp)[:, None]
        img = _blur(img, float(rng.uniform(0.4, 1.0)))
        img += rng.normal(0, rng.uniform(0.5, 2.0), img.shape)
        out.append(np.clip(img, 0, 255).round().astype(np.uint8))
    return out


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A colour of moderate saturation: a luminance plus a little chroma."""
    return rng.uniform(15, 240) + rng.normal(0, 22, 3)


def _pink_noise(size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``size x size`` 1/f noise field (natural images' spectrum) of unit standard deviation."""
    fy, fx = np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij")
    f = np.hypot(fy, fx)
    f[0, 0] = 1.0
    spectrum = (rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size))) / f
    spectrum[0, 0] = 0
    field = np.real(np.fft.ifft2(spectrum)).astype(np.float32)
    return field / (field.std() + 1e-6)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """A separable Gaussian blur with edges repeated (numpy only)."""
    half = max(1, int(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    k /= k.sum()
    for axis in (0, 1):
        pad = [(half, half) if a == axis else (0, 0) for a in range(3)]
        padded = np.pad(img, pad, mode="edge")
        img = sum(w * np.take(padded, range(i, i + img.shape[axis]), axis=axis) for i, w in enumerate(k))
    return img


class _DropPreprocessingAdvice(logging.Filter):
    """Drops ONNX Runtime's advice to run its shape pre-processing first (our graphs have static ranks and
    the quantizer infers what it needs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


def quantize(model: bytes, batches: Sequence[np.ndarray], input_name: str, *, keep: Iterable[str] | None = None,
             per_channel: bool = True, symmetric_activations: bool = True, method: str = "minmax",
             moving_average: bool = True, protect: Iterable[str] = ("head",), tail_input: str = "uint8-extremes",
             overrides: dict[str, dict] | None = None) -> bytes:
    """The int8 QDQ graph of ``model`` (ONNX bytes), activations calibrated on ``batches`` (the model's own
    input format, one array per calibration step).

    ``keep``: more convolutions to leave in float, besides :func:`protected_convs` of the ``protect`` ends
    (``("head", "tail")``: scheme 1; ``()``: none). A quantized tail keeps a float output
    (:func:`_unquantize_outputs`) and, with ``tail_input="uint8-extremes"``, its input is uint8 with a zero point
    over the extremes of the calibration batches (``"same"``: as every other activation). ``overrides``: ONNX
    Runtime's ``TensorQuantOverrides`` for tensors by name (one dictionary each, per tensor). ``method``:
    ``minmax``, ``percentile`` or ``entropy`` (ONNX Runtime's calibration methods); ``moving_average``: min/max
    averaged over the calibration images instead of the extremes of them all. Only ``Conv`` nodes are quantized.
    """
    import onnx
    from onnxruntime.quantization import (  # optional: the cpu or gpu extra
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    proto = onnx.load_from_string(model)
    for n in proto.graph.node:  # the quantizer knows nodes by name; exporters may leave them unnamed
        if not n.name:
            n.name = n.output[0]
    model = proto.SerializeToString()
    excluded = protected_convs(proto, protect) + list(keep or [])
    if not [n for n in proto.graph.node if n.op_type == "Conv" and n.name not in excluded]:
        raise ModelError("nothing to quantize: the network has no convolution between its head and its tail")
    if tail_input not in ("uint8-extremes", "same"):
        raise ValueError(f"tail_input: uint8-extremes or same, not {tail_input!r}")
    tails = [] if "tail" in set(protect) else [t for t in protected_convs(proto, ("tail",)) if t not in excluded]
    overrides = dict(overrides or {})
    if tails and tail_input == "uint8-extremes":
        inputs = sorted({n.input[0] for n in proto.graph.node if n.name in tails} - set(overrides))
        for name, (lo, hi) in zip(inputs, _extremes(model, inputs, batches, input_name), strict=True):
            overrides[name] = {"quant_type": QuantType.QUInt8, "symmetric": False, "rmin": np.float32(lo),
                               "rmax": np.float32(hi)}
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._it, None)
            return None if batch is None else {input_name: batch}

    with tempfile.TemporaryDirectory(prefix="srgan-int8-") as tmp:
        src, dst = Path(tmp) / "f32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(model)
        quiet = _DropPreprocessingAdvice()
        logging.getLogger().addFilter(quiet)  # the quantizer logs through the root logger
        try:
            quantize_static(
                str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                per_channel=per_channel,
                activation_type=QuantType.QInt8 if symmetric_activations else QuantType.QUInt8,
                weight_type=QuantType.QInt8, nodes_to_exclude=excluded, calibrate_method=methods[method],
                extra_options={"ActivationSymmetric": symmetric_activations, "WeightSymmetric": True,
                               "CalibMovingAverage": moving_average,
                               "TensorQuantOverrides": {k: [v] for k, v in overrides.items()}},
            )
        finally:
            logging.getLogger().removeFilter(quiet)
        out = dst.read_bytes()
    if tails:
        quantized = onnx.load_from_string(out)
        _unquantize_outputs(quantized, tails)
        out = quantized.SerializeToString()
    log.info("quantized to int8: %d convolutions kept in float (%s)", len(excluded), ", ".join(excluded))
    return out


def _extremes(model: bytes, tensors: Sequence[str], batches: Sequence[np.ndarray],
              input_name: str) -> list[tuple[float, float]]:
    """The smallest and largest value (0 included) each of ``tensors`` takes in float32 over ``batches``."""
    import onnx
    import onnxruntime as ort  # optional: the cpu or gpu extra

    proto = onnx.load_from_string(model)
    del proto.graph.output[:]
    proto.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in tensors)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    lo, hi = np.zeros(len(tensors)), np.zeros(len(tensors))
    for batch in batches:
        for i, value in enumerate(session.run(list(tensors), {input_name: batch})):
            lo[i], hi[i] = min(lo[i], float(value.min())), max(hi[i], float(value.max()))
    return list(zip(lo.tolist(), hi.tolist(), strict=True))


def calibration_batches(contract: ModelContract, images: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
    """``images`` (default :func:`calibration_images`) as the network takes them: one ``(1, ...)`` float32 batch
    each, in the contract's layout and value range."""
    lo, hi = contract.value_range
    out = []
    for img in calibration_images() if images is None else images:
        batch = img[None].astype(np.float32)
        if (lo, hi) != (0.0, 255.0):
            batch = batch * np.float32((hi - lo) / 255.0) + np.float32(lo)
        if contract.layout == "NCHW":
            batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        out.append(batch)
    return out


def model_contract(proto: onnx.ModelProto) -> ModelContract:
    """The srgan contract stored in ``proto``, else one inferred from its input (NHWC or NCHW, values 0..255)."""
    contract = ModelContract.of_proto(proto)
    if contract is not None:
        return contract
    inp = next(i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer})
    dims: list[object] = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    return ModelContract(scale=1, input_name=inp.name, layout=infer_layout(dims))


def int8_model(path: Path, rewritten: bytes | None = None, cache: CompileCache | None = None) -> bytes:
    """The int8 graph of ``path`` (or of its ``rewritten`` graph): read back from ``cache``, else quantized on
    :func:`calibration_images` (tens of seconds on two cores) and stored there."""
    source = path.read_bytes() if rewritten is None else rewritten
    saved = cache.int8_file(content_hash(source), runtime_version("onnxruntime")) if cache is not None else None
    if saved is not None and saved.is_file():
        return saved.read_bytes()
    try:
        import onnx

        proto = onnx.load_from_string(source)
        contract = model_contract(proto)
        data = quantize(source, calibration_batches(contract), contract.input_name)
    except ModelError:
        raise
    except Exception as exc:  # ONNX Runtime's quantizer raises its own untyped errors
        raise ModelError(f"cannot quantize {path} to int8: {exc}") from exc
    if cache is not None and saved is not None:
        cache.store(saved, data)
    return data
