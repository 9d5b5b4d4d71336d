"""Loading: the one place a resolved model (or a detail/denoise blend) becomes an ``Upscaler``.

``ModelCatalog.blend`` says which network a job runs (``core.catalog.catalog.Blend``);
the worker's engine cache and ``srgan upscale`` both build it with :func:`build_upscaler`,
so a job and a local run of the same model and ``detail`` run the same network
with the same tiling; the benchmarks open a file with :func:`open_engine`. All
of them take their engine options from :func:`engine_options`. ONNX Runtime/OpenVINO
are imported only when it runs, onnx only for a blend (``import core.catalog.load`` stays cheap for ``srgan``'s
start-up, and a model whose compiled network is in the compile cache loads without reading its graph in Python).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.catalog.catalog import Blend
from core.settings import Settings
from model.backends import Backend, open_backend
from model.engine import Upscaler

if TYPE_CHECKING:  # start-up: onnx for a blend only (one model loads from the compile cache without it)
    import onnx

log = logging.getLogger(__name__)


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
    return Upscaler.from_file(path, **engine_options(settings, backend=backend, tile=tile, overlap=overlap,
                                                     precision=precision))


def auto_tries_int8(card_int8: dict[str, Any] | None) -> bool:
    """Whether ``precision auto`` quantizes a model and runs its int8 probe: only where its card records an int8
    measurement whose probe passed (``auto_keeps``, true where the card does not say). Quantizing takes 8-14 s
    on two cores; a model whose measured probe failed (``srgan_x4``: 0.138 dB mean) would pay it at every cold
    start only to run bf16. The probe still decides on this CPU where the card's passed."""
    return card_int8 is not None and card_int8.get("auto_keeps", True) is not False


def build_upscaler(settings: Settings, blend: Blend, *, backend: str | None = None, tile: int | str | None = None,
                   overlap: int | None = None, precision: str | None = None) -> Upscaler:
    """Load ``blend``'s network with the engine settings (``backend``/``tile``/``overlap``/``precision``
    override them)."""
    kwargs = engine_options(settings, backend=backend, tile=tile, overlap=overlap, precision=precision)
    info = blend.target
    parts = blend.parts()
    if len(parts) == 1:
        engine = Upscaler.from_file(parts[0][0].path, **kwargs, auto_int8=auto_tries_int8(parts[0][0].int8))
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
