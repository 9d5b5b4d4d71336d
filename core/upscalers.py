"""Building engines from settings: the one place a model (or a detail/denoise blend) becomes an ``Upscaler``.

The worker's engine cache and ``srgan upscale`` both call :func:`build_upscaler`,
so a job and a local run of the same model and ``detail`` run the same network
with the same tiling; the benchmarks open a file with :func:`open_engine`. All
of them take their engine options from :func:`engine_options`. ONNX Runtime/OpenVINO are imported only when it runs.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.catalog import ModelCatalog, ModelRef, require_denoise_base, require_detail_base
from core.settings import Settings
from model.errors import InvalidParameter
from model.images import JPEG_QUALITY_KEY
from model.interpolate import round_denoise, round_detail
from model.strength import Strength, auto_denoise, noise_sigma

if TYPE_CHECKING:
    import onnx
    from PIL import Image

    from model.backends import Backend
    from model.engine import Upscaler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Blend:
    """What a request runs: ``target`` (the model asked for), blended for ``detail`` with its PSNR model ``base``
    and for ``denoise`` with its clean model ``clean`` (and, with both knobs, ``clean``'s PSNR model
    ``clean_base``): the bilinear blend of up to four models of one family (``model.interpolate``)."""

    target: ModelRef
    base: ModelRef | None = None
    detail: float | None = None
    denoise: Strength | None = None
    clean: ModelRef | None = None
    clean_base: ModelRef | None = None

    def parts(self) -> list[tuple[ModelRef, float]]:
        """The models and their weights (each > 0, adding up to 1; the target last when it takes part)."""
        t = 1.0 if self.detail is None else self.detail
        n = 1.0 if self.denoise is None else self.denoise.value
        corners = [(self.clean_base, (1 - t) * (1 - n)), (self.clean, t * (1 - n)), (self.base, (1 - t) * n),
                   (self.target, t * n)]
        return [(m, round(w, 6)) for m, w in corners if m is not None and w > 1e-9]

    def describe(self) -> dict[str, Any]:
        """The job record's and the result's account of the blend (empty when no knob was asked)."""
        out: dict[str, Any] = {}
        if self.detail is not None:
            out.update(detail=self.detail, detail_base=self.base.ref if self.base else None,
                       detail_target=self.target.ref)
        if self.denoise is not None:
            out.update(denoise=self.denoise.to_json(), denoise_base=self.clean.ref if self.clean else None)
        return out


def resolve_blend(settings: Settings, spec: str | None, detail: float | None, *,
                  denoise: Strength | None = None,
                  resolve: Callable[[str | None], ModelRef] | None = None) -> Blend:
    """The model ``spec`` names and, when ``detail`` is given, its detail base; with ``denoise``, its clean model
    (and that one's detail base when both are given).

    ``resolve`` maps a spec to a version (default: a :class:`core.catalog.ModelCatalog`'s;
    the worker passes its cached resolver). Raises ``InvalidParameter`` for a
    bad ``detail`` or a model without detail or denoise control, ``ModelError`` when a base is missing.
    """
    resolve = resolve or ModelCatalog(settings).resolve
    target = resolve(spec)
    base = clean = clean_base = None
    if detail is not None:
        detail = round_detail(detail)
        base = resolve(require_detail_base(target))
    if denoise is not None:
        clean = resolve(require_denoise_base(target))
        if detail is not None:
            clean_base = resolve(require_detail_base(clean))
    return Blend(target, base, detail, denoise, clean, clean_base)


def choose_denoise(target: ModelRef, requested: float | str | None, img: Image.Image) -> Strength | None:
    """The denoise strength a request for ``target`` runs at on the decoded upload ``img``.

    ``requested``: a number 0..1 (rounded to 0.05), or ``auto``/None: estimated from the upload's JPEG tables and
    noise (``model.strength``; a clean image gets 0, which is the clean model itself). A model without denoise
    control runs as it is under ``auto`` (None) and refuses a number (``InvalidParameter``).
    """
    if requested is None or requested == "auto":
        if not target.denoise_base:
            return None
        pixels = np.asarray(img.convert("RGB"))
        strength = auto_denoise(img.info.get(JPEG_QUALITY_KEY), noise_sigma(pixels))
        return Strength(round_denoise(strength.value), f"auto: {strength.reason}")
    if isinstance(requested, str):
        try:
            requested = float(requested)
        except ValueError:
            raise InvalidParameter(f"denoise must be a number between 0 and 1 or auto, got {requested!r}") from None
    require_denoise_base(target)
    return Strength(round_denoise(requested), "asked")


def engine_options(settings: Settings, *, backend: str | None = None, tile: int | str | None = None,
                   overlap: int | None = None, precision: str | None = None) -> dict[str, Any]:
    """``Upscaler.from_file``'s engine arguments from the settings (``backend``/``tile``/``overlap``/``precision``
    override them): the one place settings become engine options."""
    return {
        "backend": backend or settings.backend,
        "providers": settings.providers,
        "threads": settings.threads,
        "tile": settings.tile if tile is None else tile,
        "overlap": settings.overlap if overlap is None else overlap,
        "tile_batch": settings.tile_batch,
        "precision": precision or settings.precision,
        "memory_budget": int(settings.memory_budget) if settings.memory_budget else None,
        "cache_dir": settings.resolved_cache_dir,
    }


def open_engine(settings: Settings, path: Path, *, backend: str | None = None, tile: int | str | None = None,
                overlap: int | None = None, precision: str | None = None) -> Upscaler:
    """An engine for one ONNX file with the settings' engine options (what the benchmarks time)."""
    from model.engine import Upscaler

    return Upscaler.from_file(path, **engine_options(settings, backend=backend, tile=tile, overlap=overlap,
                                                     precision=precision))


def build_upscaler(settings: Settings, blend: Blend, *, backend: str | None = None, tile: int | str | None = None,
                   overlap: int | None = None, precision: str | None = None) -> Upscaler:
    """Load ``blend``'s network with the engine settings (``backend``/``tile``/``overlap``/``precision``
    override them)."""
    from model.backends import open_backend
    from model.engine import Upscaler

    kwargs = engine_options(settings, backend=backend, tile=tile, overlap=overlap, precision=precision)
    info = blend.target
    parts = blend.parts()
    if len(parts) == 1:
        engine = Upscaler.from_file(parts[0][0].path, **kwargs)
    else:
        from model.interpolate import blend_models

        proto = blend_models([(m.path, w) for m, w in parts])
        name = f"{info.name}-blend-{'-'.join(f'{w:.3f}' for _, w in parts)}.onnx"

        def reload(at: str) -> Backend:
            """The blend again at precision ``at`` (a float32 re-run of a bad tile), from the proto kept here."""
            with _as_file(proto, name) as path:
                return open_backend(path, backend=kwargs["backend"], providers=kwargs["providers"],
                                    threads=kwargs["threads"], precision=at)

        # not in the compile cache: each of the 21 x 21 detail/denoise values would leave a network there
        with _as_file(proto, name) as path:  # both backends hold the network in memory once loaded
            engine = Upscaler.from_file(path, **{**kwargs, "cache_dir": None}, reload=reload)
        if engine.precision == "f32":
            engine.reload = None  # no tile to re-run in float32: let the proto go
        log.info("built %s", " + ".join(f"{w:.3f} {m.ref}" for m, w in parts))
    if info.source == "registry":  # the registry's name and version, whatever the file was exported as
        engine.contract = engine.contract.with_identity(info.name, info.version, info.metrics)
    return engine


def provenance(upscaler: Upscaler, blend: Blend) -> dict[str, Any]:
    """What a result's metadata says made it: the model (``name:version``) and the detail blend."""
    contract = upscaler.contract
    return {"model": f"{contract.name}:{contract.version}" if contract.version else contract.name,
            **blend.describe()}


@contextmanager
def _as_file(proto: onnx.ModelProto, name: str) -> Iterator[Path]:
    """``proto`` saved as ``name`` in a temporary folder, for a backend to load; removed afterwards."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="srgan-blend-") as tmp:
        path = Path(tmp) / name
        onnx.save(proto, str(path))
        yield path
