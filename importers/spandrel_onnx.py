"""PyTorch files of the architectures spandrel knows, as ONNX of the service's contract (the ``import`` extra).

``importers.convert`` sends here every PyTorch file its torch-free builder does not build (that one builds
Real-ESRGAN's SRVGGNetCompact). Four steps, each refusing by name what it cannot do:

1. Detect. The state dict comes from ``importers.torchfile`` (the restricted unpickler: tensors and dicts only,
   never code; the same reader as the torch-free path), spandrel canonicalises it and the first of its built-in
   architectures (``MAIN_REGISTRY``, in detection order) whose detector matches builds the network with the
   hyper-parameters read off the shapes.
2. Refuse what the service cannot serve as a model: an architecture that is not one of spandrel's own (those of
   ``spandrel_extra_arches``, under non-commercial or other restrictive licences, which we do not install: its
   architectures are not even detected, :data:`EXTRA_ARCHES`), a purpose other than super-resolution or
   restoration (face restoration, inpainting), a network that does not take and give 3 channels.
3. Export with torch.onnx's TorchScript exporter (``dynamo=False``: still in torch 2.13, it needs no onnxscript
   and writes opset 17 directly), NCHW float32 0..1 in and out, batch, height and width dynamic. The graph is what
   spandrel's ``ImageModelDescriptor.__call__`` computes (:class:`_SpandrelCall`): padding to the sizes the
   architecture needs (reflect, then replicate), its own pre- and post-processing, the clamp to 0..1, the crop.
   ``torch.sort`` is written as ONNX's TopK, a stable sort (:func:`_sort`; ATD). Tested on small networks of
   random weights (tests/unit/importers/test_spandrel.py): SwinIR, HAT, DAT, ATD, SPAN, OmniSR and RealCUGAN
   import at 129-149 dB; SAFMN is refused (``adaptive_max_pool2d`` to a fraction of a dynamic size).
4. Parity: ONNX Runtime runs the file and spandrel runs the network in PyTorch (its sorts stable, as the
   file's: :func:`_stable_sort`), both float32, on one image of another size than the one traced (a size baked
   into the graph shows), and the file is refused below :data:`PARITY_FLOOR_DB` (80 dB; correct exports
   measure 128-162). Max difference and PSNR go on the card.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import math
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from importers.ncnn import OUTPUT
from importers.torchfile import WeightsError
from model.contract import ModelContract

OPSET = 17
TRACE_HW = (29, 37)
"""The input size the exporter traces with. Odd on purpose: an architecture that pads to its window inside its
forward (SwinIR, OmniSR) then traces that padding as a function of the size; traced at a multiple of the window
the pad is 0, drops out of the graph, and the file fails at other sizes (ONNX Runtime: a Reshape that does not
fit)."""
PARITY_HW = (48, 60)
"""Height and width of the default parity image (:func:`parity_image`), another size than :data:`TRACE_HW`."""
PARITY_FLOOR_DB = 80.0
"""Least PSNR (peak 1.0, float32 outputs) of the ONNX file's output against PyTorch's for the file to be the same
model. Measured on 60x48 crops of BSD200 training photos (ONNX Runtime 1.32 against torch 2.13, this project's
2-core Xeon): a correct export agrees at 128-162 dB (realesr-animevideov3, 143-147, and 134 on the built-in
:func:`parity_image`; small ESRGAN, SPAN, SwinIR and OmniSR of random weights, 128-162), the float32 sums in
another order. Wrong exports measured: the same
network with its weights rounded to float16, 84.8 dB; zeros instead of spandrel's reflected padding (a border
bug), 57 dB; a window padding traced away (SwinIR, OmniSR traced at a multiple of 8), no output at all. 80 dB is
an RMS difference of 1e-4 (0.03 of an 8-bit level): 48 dB below the least correct export, above every wrong one
but the float16 rounding, which no export here does."""
PURPOSES = ("SR", "Restoration")
"""spandrel's purposes the service serves: super-resolution (scale > 1) and restoration (scale 1: denoise,
deblur, de-JPEG). FaceSR needs aligned face crops and Inpainting a mask: not whole pictures."""
EXTRA_ARCHES = ("SRFormer", "FeMaSR", "AdaCode", "CodeFormer", "MAT", "Restormer", "M3SNet", "MPRNet", "MIRNet2",
                "DDColor")
"""The architectures spandrel keeps in ``spandrel_extra_arches`` (non-commercial or other restrictive licences;
spandrel 0.4 README): not installed, so not detected, and refused if some other code registered them."""
CODE_LICENCE = ("permissive: spandrel's built-in architectures are under MIT, Apache-2.0 or public-domain "
                "licences (spandrel's README); the weights' licence is their author's")

_TORCHVISION_SCHEMAS = {"nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
                        "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"}
_defined: list[Any] = []
"""The ``torch.library.Library`` of the schemas :func:`load_spandrel` defined: kept, as a collected Library drops
its definitions."""


@dataclass(frozen=True)
class Exported:
    proto: onnx.ModelProto
    arch: dict[str, Any]
    """The card's architecture: name, spandrel's id, purpose, tags, hyper-parameters, parameters, scale and, for
    Real-ESRGAN's architectures, the family and depth ``importers.convert.tiling_for`` reads."""
    parity: dict[str, Any]


def load_spandrel() -> Any:
    """spandrel, imported so that it loads beside PyPI's torchvision.

    PyPI ships torchvision for Linux as CUDA builds only. With the CPU-only torch (the import extra) its compiled
    ops (``torchvision/_C.so``) do not load (``libc10_cuda.so`` is missing); torchvision goes on without them
    except in ``_meta_registrations.py``, which registers fake kernels for ``torchvision::nms`` and ``::qnms``
    unguarded and fails: "operator torchvision::nms does not exist". spandrel imports torchvision (RestoreFormer
    and LaMa use ``torchvision.transforms.functional``), so it would not import at all. When those ops are absent
    and the compiled ops cannot be loaded, their two schemas are defined here first, so the registrations succeed.
    No super-resolution architecture calls nms (a call would fail: the schemas have no kernel). A torchvision
    whose ops load (PyTorch's CPU index) registers the real ones and nothing is defined. This runs before
    torchvision's first import, as a failed import leaves half-initialised modules behind.
    """
    spec = importlib.util.find_spec("torchvision")
    if "torchvision" not in sys.modules and spec is not None and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations)))
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            if (folder / f"_C{suffix}").is_file() and not hasattr(torch.ops.torchvision, "nms"):
                try:
                    torch.ops.load_library(str(folder / f"_C{suffix}"))  # what torchvision's import does first
                except OSError:
                    pass  # the CUDA build beside the CPU torch
        missing = [schema for op, schema in _TORCHVISION_SCHEMAS.items() if not hasattr(torch.ops.torchvision, op)]
        if missing:
            library = torch.library.Library("torchvision", "DEF")
            for schema in missing:
                library.define(schema)
            _defined.append(library)
    import spandrel

    return spandrel


def import_state_dict(tensors: dict[str, np.ndarray], name: str, *,
                      parity_hwc_u8: np.ndarray | None = None) -> Exported:
    """Detect, refuse, export and check (the module's docstring) the network of ``tensors``; raises
    ``WeightsError`` naming what is refused."""
    descriptor = detect(tensors)
    why = refusal(descriptor)
    if why:
        raise WeightsError(why)
    module = _SpandrelCall(descriptor).eval()
    proto = _export(module, name, descriptor.architecture.name)
    ModelContract(scale=int(descriptor.scale), input_name="input", output_name=OUTPUT, layout="NCHW",
                  value_range=(0.0, 1.0), name=name, version="imported").store_in(proto)
    onnx.checker.check_model(proto)
    parity = check_parity(proto, descriptor, parity_image() if parity_hwc_u8 is None else parity_hwc_u8)
    return Exported(proto, describe(descriptor), parity)


def detect(tensors: dict[str, np.ndarray]) -> Any:
    """spandrel's model descriptor of a state dict (its network built, weights loaded, float32, eval mode)."""
    spandrel = load_spandrel()
    state = spandrel.canonicalize_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()})
    found = next((s.architecture for s in spandrel.MAIN_REGISTRY.architectures("detection") if s.detect(state)), None)
    if found is None:
        raise WeightsError(
            f"architecture not recognised: none of spandrel {spandrel.__version__}'s architectures matches its "
            f"{len(state)} tensors (e.g. {', '.join(sorted(state)[:3])}); spandrel_extra_arches' (non-commercial "
            f"or restrictive licences: {', '.join(EXTRA_ARCHES)}) are not installed and not imported")
    if _extra(found):  # before its code runs
        raise WeightsError(_extra(found))
    try:
        descriptor = found.load(state)
    except Exception as exc:  # noqa: BLE001 - a detector's false positive fails in any of torch's ways
        raise WeightsError(f"spandrel took it for {found.name} but could not build that network from it "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    return descriptor.float().eval()


def _extra(arch: Any) -> str | None:
    """The refusal of an architecture that is not one of spandrel's own (None: it is)."""
    if type(arch).__module__.startswith("spandrel.architectures."):
        return None
    return (f"{arch.name} is not one of spandrel's own architectures (spandrel_extra_arches': non-commercial or "
            "other restrictive licences): not imported")


def refusal(descriptor: Any) -> str | None:
    """Why the service cannot serve this network (None: it can): an extra (non-commercial) architecture, a purpose
    other than SR or restoration, or other than 3 channels in and out."""
    arch = descriptor.architecture
    if _extra(arch):
        return _extra(arch)
    if descriptor.purpose not in PURPOSES:
        return (f"{arch.name} is a {descriptor.purpose} model (spandrel's purpose), not single-image "
                "super-resolution or restoration: not imported")
    if (descriptor.input_channels, descriptor.output_channels) != (3, 3):
        return (f"{arch.name} maps {descriptor.input_channels} channel(s) to {descriptor.output_channels}; the "
                "service runs RGB to RGB (3 to 3): not imported")
    return None


def describe(descriptor: Any) -> dict[str, Any]:
    """The card's architecture entry."""
    arch = descriptor.architecture
    hyper: dict[str, Any] = {k: v for k, v in (getattr(descriptor.model, "hyperparameters", None) or {}).items()
                             if isinstance(v, (bool, int, float, str, type(None)))}  # what JSON holds
    out: dict[str, Any] = {
        "type": arch.name, "spandrel_id": arch.id, "purpose": descriptor.purpose, "tags": list(descriptor.tags),
        "scale": int(descriptor.scale), "hyperparameters": hyper,
        "parameters": int(sum(p.numel() for p in descriptor.model.parameters())),
        "code_licence": CODE_LICENCE}
    if arch.id == "Compact":
        out.update(family="SRVGGNetCompact", num_conv=int(hyper["num_conv"]))
    elif arch.id == "ESRGAN":
        out.update(family="RRDBNet", num_block=int(hyper["num_blocks"]))
        if hyper.get("shuffle_factor"):
            out["pixel_unshuffle"] = int(hyper["shuffle_factor"])
    return out


class _SpandrelCall(torch.nn.Module):
    """What spandrel's ``ImageModelDescriptor.__call__`` computes, as a module the exporter traces with the
    input's size kept symbolic: pad to the architecture's size requirements (reflect as far as the image allows,
    then replicate, as spandrel's ``pad_tensor``), run the network through the architecture's call (its own pre-
    and post-processing, e.g. RestoreFormer's normalisation), clamp to 0..1, crop the padding off."""

    def __init__(self, descriptor: Any) -> None:
        super().__init__()
        self.net = descriptor.model
        self.call = descriptor._call_fn  # spandrel's per-architecture call: no public accessor
        req = descriptor.size_requirements
        self.minimum, self.multiple, self.square, self.pads = req.minimum, req.multiple_of, req.square, not req.none
        self.scale = int(descriptor.scale)

    def _target(self, size: Any) -> Any:
        padded = torch.clamp(torch.as_tensor(size), min=self.minimum)
        return (padded + self.multiple - 1) // self.multiple * self.multiple

    def forward(self, x: Any) -> Any:
        if not self.pads:
            return self.call(self.net, x).clamp(0, 1)
        h, w = x.shape[-2], x.shape[-1]  # tensors while tracing: the padding stays a function of the input's size
        th, tw = self._target(h), self._target(w)
        if self.square:
            th = tw = torch.maximum(th, tw)
        ph, pw = th - h, tw - w
        rh, rw = torch.clamp(ph, max=h - 1), torch.clamp(pw, max=w - 1)
        x = torch.nn.functional.pad(x, (0, rw, 0, rh), mode="reflect")
        x = torch.nn.functional.pad(x, (0, pw - rw, 0, ph - rh), mode="replicate")
        y = self.call(self.net, x).clamp(0, 1)
        return y[:, :, : h * self.scale, : w * self.scale]


def _sort(g: Any, x: Any, *args: Any) -> Any:
    """``aten::sort`` for the TorchScript exporter, both overloads: ``sort(self, dim, descending)`` and
    ``sort.stable(self, stable, dim, descending)``. torch's own symbolic takes the latter's 4 arguments for the
    former's and refuses "Out parameter is not supported" (pytorch/pytorch#95613, open); ATD sorts its tokens
    with ``torch.sort(..., stable=False)``. Written as ONNX's TopK, whose ties keep their order (the lower index
    first, ONNX's TopK spec): a stable sort, as :func:`_stable_sort` makes the parity check's PyTorch run."""
    helper = torch.onnx.symbolic_helper
    dim, descending = args[-2:]
    return helper._sort_helper(g, x, helper._get_const(dim, "i", "dim"),
                               descending=bool(helper._get_const(descending, "i", "descending")))


@contextlib.contextmanager
def _stable_sort() -> Any:
    """``torch.sort`` stable while PyTorch computes the parity check's reference. An unstable sort orders ties
    as its implementation happens to (CPU and CUDA differently); the exported TopK orders them by index. ATD
    sorts integer token categories, nearly all ties, and where a category straddles two of its attention groups
    the order decides which tokens attend together: PyTorch's unstable sort against its own stable sort, 80.5 dB
    on a small ATD of random weights; the exported file against the stable sort, 148 dB. The file is compared
    with the stable one, the defined order of ATD's own output."""
    unstable = torch.sort

    def stable(*args: Any, **kwargs: Any) -> Any:
        return unstable(*args, **{**kwargs, "stable": True})

    torch.sort = stable
    try:
        yield
    finally:
        torch.sort = unstable


@contextlib.contextmanager
def _stdout_to(path: Path) -> Any:
    """File descriptor 1 into ``path`` while the exporter runs. torch 2.13's TorchScript exporter turns its C++
    log on for every export (``setup_onnx_logging`` tests ``_C._jit_is_onnx_log_enabled`` without calling it:
    always true) and, when a pass fails, writes the whole TorchScript graph to stdout ("Torch IR graph at
    exception", 40 kB for a small SAFMN) before the one-line refusal."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with path.open("wb") as sink:
            os.dup2(sink.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _export(module: torch.nn.Module, name: str, arch_name: str) -> onnx.ModelProto:
    example = torch.rand(1, 3, *TRACE_HW, generator=torch.Generator().manual_seed(0))
    axes = {0: "batch", 2: "height", 3: "width"}
    with tempfile.TemporaryDirectory(prefix="srgan-import-") as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # sizes read while tracing: parity checks them
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is, in parts: chosen
        path = Path(tmp) / "model.onnx"
        torch.onnx.register_custom_op_symbolic("aten::sort", _sort, OPSET)
        try:
            with _stdout_to(Path(tmp) / "exporter.log"):
                torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=OPSET,
                                  input_names=["input"], output_names=[OUTPUT],
                                  dynamic_axes={"input": axes, OUTPUT: axes})
        except Exception as exc:  # noqa: BLE001 - the exporter fails in many ways, each an unsupported construct
            # the first line, without the TorchScript value it names ("[Caused by the value ...": a graph line)
            first = str(exc).strip().splitlines()[0].split("  [Caused by")[0][:300] if str(exc).strip() else ""
            raise WeightsError(f"{arch_name}: torch.onnx could not export it ({type(exc).__name__}: {first})") from None
        finally:
            torch.onnx.unregister_custom_op_symbolic("aten::sort", OPSET)
        proto = onnx.load(str(path))
    proto.graph.name = f"{name}_{arch_name.replace(' ', '_')}"
    proto.producer_name = f"srgan import (spandrel, torch {torch.__version__})"
    return proto


def parity_image(h: int = PARITY_HW[0], w: int = PARITY_HW[1]) -> np.ndarray:
    """The default parity input (HWC uint8, deterministic): texture at 1-, 2-, 4- and 8-pixel scales over a
    colour gradient, hard edges, and pure black and white patches, so every layer sees the range of values and
    frequencies a photo gives (the tests use real training photos too)."""
    rng = np.random.default_rng(20)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([40 + 160 * x / max(w - 1, 1), 60 + 120 * y / max(h - 1, 1),
                    200 - 140 * (x + y) / max(w + h - 2, 1)], axis=-1)
    for cell, amplitude in ((1, 12), (2, 16), (4, 24), (8, 32)):
        noise = rng.normal(0, amplitude, (h // cell + 1, w // cell + 1, 3))
        img += np.kron(noise, np.ones((cell, cell, 1)))[:h, :w]
    img[h // 4 : h // 2, w // 5 : w // 2] += 60  # a bright rectangle: hard edges
    img[-6:, :6], img[:6, -6:] = 0, 255  # saturated corners
    return np.clip(img, 0, 255).round().astype(np.uint8)


def check_parity(proto: onnx.ModelProto, descriptor: Any, hwc_u8: np.ndarray) -> dict[str, Any]:
    """ONNX Runtime's output of ``proto`` against spandrel's (PyTorch) on ``hwc_u8``, both float32; raises
    ``WeightsError`` below :data:`PARITY_FLOOR_DB`."""
    import onnxruntime as ort  # the cpu or gpu extra, as for every model the service runs

    nchw = np.ascontiguousarray(hwc_u8.transpose(2, 0, 1)[None], dtype=np.float32) / 255
    h, w = hwc_u8.shape[:2]
    try:
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        got = session.run(None, {"input": nchw})[0]
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's errors share no base class
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"ONNX Runtime cannot run the exported file on a {w}x{h} image (traced at "
                           f"{TRACE_HW[1]}x{TRACE_HW[0]}: a size baked into the graph?): {first}; "
                           "not imported") from None
    with _stable_sort():  # the order of ties the exported TopK keeps
        want = descriptor(torch.from_numpy(nchw)).numpy()
    if got.shape != want.shape:
        raise WeightsError(f"the ONNX file gives {got.shape} for a {w}x{h} image where PyTorch gives {want.shape}: "
                           "a size is baked into the graph; not imported")
    diff = np.abs(got.astype(np.float64) - want)
    mse = float(np.mean(diff**2))
    psnr = math.inf if mse == 0 else 10 * math.log10(1.0 / mse)
    parity = {"image": f"{w}x{h}", "max_abs_diff": float(diff.max()),
              "psnr_db": round(psnr, 1) if mse else None,  # None: the same floats
              "floor_db": PARITY_FLOOR_DB, "runtimes": f"onnxruntime {ort.__version__} vs torch {torch.__version__}"}
    if psnr < PARITY_FLOOR_DB:
        raise WeightsError(f"the ONNX file is not the PyTorch model: {psnr:.1f} dB (max difference "
                           f"{diff.max():.3g}) on a {w}x{h} image, below {PARITY_FLOOR_DB:.0f} dB; not imported")
    return parity
