"""The upscaling engine: an ONNX generator run tile by tile with overlap blending.

``Upscaler`` is small and stateless between calls: the backend and the
contract come in, images go through ``upscale``. Output rows are accumulated
in horizontal strips, so working memory is bounded by the tile and strip
sizes, not by the image (only the finished result is image-sized; use
``iter_strips`` to hand rows to an encoder without even that). Images come in
as uint8 or uint16 (16 bits per channel): the network and the blending run in
float either way, and the result has the input's type, so 16-bit images keep
their levels end to end.

A model's contract may ask for more (``ModelContract.tiling``): a minimum overlap (the engine uses the larger
of it and its own), and a border reflected around the whole image before the network and cropped off after
(``pre_pad``). The tile plan is then made for the padded image, its windows read through reflected indices
(no padded copy of the image), and the strips cropped back to the image as they are yielded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from model.backends import (
    Backend,
    cpu_flags,
    default_memory_budget,
    device_memory_budget,
    native_precision,
    open_backend,
    resolve_backend,
    runtime_version,
)
from model.compile_cache import CompileCache, content_hash
from model.contract import Layout, ModelContract, infer_layout
from model.errors import Canceled, InferenceError, InvalidParameter, ModelError, OutOfMemory
from model.int8 import SCHEME_SHORT, SCHEME_VERSION, calibration_images, int8_native, int8_units
from model.probe import judge_probe, probe_image
from model.quality import bicubic_downscale, rgb_to_y
from model.tiling import MIN_AUTO_TILE, TilePlan, axis_weights, choose_tiles, iter_batches, validate_tiling

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Called as ``progress(done_tiles, total_tiles)`` after each batch of tiles."""

PROBE_SIZE = 16
CHECK_SIZE = 48
"""Side of the probe image a reduced precision is checked on against float32 at load."""
CHECK_MIN_PSNR_DB = 50.0
"""RGB PSNR against float32 a reduced precision must reach on the probe image (``auto``)."""
INT8_MAX_COST_DB = 0.05
INT8_MAX_WORST_DB = 0.15
"""``auto`` keeps int8 only when its Y-PSNR cost against float32 on the int8 probe images is at most this on
average and on the worst image (issue 23's bounds for Set5/Set14; :func:`int8_cost`)."""
INT8_PROBE_COUNT = 6
INT8_PROBE_SIZE = 48
INT8_PROBE_SEED = 1
"""The int8 probe: this many synthetic photos (``model.int8.calibration_images`` with another seed than the
calibration's) of this side in input pixels, whose ground truth is the image before downscaling."""
BLANK_RANGE = 1.0
"""A tile output whose values span less than this (0..255 scale) is blank..."""
BLANK_INPUT_RANGE = 8.0
"""...when its input spans at least this much: such a tile is re-run in float32."""

BackendFactory = Callable[[str], Backend]
"""Loads the engine's network again at a given precision (the float32 re-run of a bad tile)."""


class Upscaler:
    """Tiled super-resolution with one model.

    Args:
        backend: a loaded model (see ``model.backends``).
        contract: how to feed it; ``from_file`` reads it from the file.
        tile: core tile size in input pixels; 0 runs the whole image at once; ``"auto"``
            the largest tile whose working memory fits ``memory_budget`` (per image).
        overlap: context added on each interior side of a tile; at least the contract's
            ``tiling.min_overlap`` (:meth:`overlap_for`; a fixed ``tile`` grows past it, :meth:`tile_for`).
        tile_batch: tiles per backend call.
        memory_budget: bytes of working memory for ``tile="auto"`` (default
            ``model.backends.default_memory_budget()``; on a GPU the network's budget there,
            default ``model.backends.device_memory_budget()``, the output strips staying
            within the host default).
        reload: loads the same network at another precision; with it, a tile whose
            reduced-precision output has NaN or is blank (its input is not) is
            re-run in float32.
        precision_note: how the precision was chosen (``auto``'s check), for records.
    """

    def __init__(
        self, backend: Backend, contract: ModelContract, *, tile: int | str = "auto", overlap: int = 8,
        tile_batch: int = 1, reload: BackendFactory | None = None, precision_note: str | None = None,
        memory_budget: int | None = None,
    ) -> None:
        _validate_tile(tile, overlap)
        if tile_batch < 1:
            raise InvalidParameter(f"tile_batch must be >= 1, got {tile_batch}")
        if memory_budget is not None and memory_budget <= 0:
            raise InvalidParameter(f"memory_budget must be > 0 bytes, got {memory_budget}")
        self.backend = backend
        self.contract = contract
        self.tile = tile
        self.memory_budget = memory_budget
        self.oom_splits = 0
        """Tiles re-split after an out-of-memory error since this engine was loaded."""
        self.overlap = overlap
        self.tile_batch = tile_batch
        self.reload = reload
        self.precision_note = precision_note
        self._f32: Backend | None = None
        self.f32_reruns = 0
        """Tiles re-run in float32 since this engine was loaded."""

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        backend: str = "auto",
        providers: list[str] | None = None,
        threads: int = 0,
        tile: int | str = "auto",
        overlap: int = 8,
        tile_batch: int = 1,
        scale: int | None = None,
        layout: Layout | None = None,
        value_range: tuple[float, float] | None = None,
        precision: str = "f32",
        reload: BackendFactory | None = None,
        memory_budget: int | None = None,
        cache_dir: Path | None = None,
        auto_int8: bool = True,
    ) -> Upscaler:
        """Load an ONNX generator; its contract comes from its metadata, else is inferred.

        ``scale``, ``layout`` and ``value_range`` override what the file says or what a probe finds.
        A foreign file (no srgan contract) must pass :func:`model.probe.judge_probe`
        as read; else ModelError names what looks wrong (e.g. a 0..1 model).
        ``precision``: ``f32``, ``bf16``, ``f16``, ``int8``, or ``auto`` (with a ``cache_dir`` on a CPU with
        AMX-INT8, VNNI or AVX2 under OpenVINO, int8 when it passes :func:`int8_cost`'s bounds; else the fastest
        float precision the device runs natively, kept only when it passes :func:`check_precision` on a probe
        image, else float32).
        ``reload`` loads the network again at a precision
        (default: from ``path``; pass one when ``path`` will not outlive the engine).
        ``cache_dir``: a :class:`model.compile_cache.CompileCache` folder for compiled networks and ``auto``'s
        decision (start-up of the next process on this machine skips both). ``auto_int8=False``: ``auto`` does
        not try int8 (quantizing costs tens of seconds to minutes the first time; the catalog asks it only for
        models whose card records an int8 measurement).
        """
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        cache = CompileCache(cache_dir) if cache_dir is not None else None

        def reload_from_path(p: str) -> Backend:
            return open_backend(path, backend=backend, providers=providers, threads=threads, precision=p,
                                cache=cache)

        reload = reload or reload_from_path
        note = f"int8 as asked ({SCHEME_SHORT})" if precision == "int8" else None
        if precision == "auto":
            engine, note = _auto_precision(path, reload, cache, resolve_backend(backend, providers), auto_int8)
            log.info("%s: %s", path.name, note)
        else:
            engine = reload(precision)
        contract = ModelContract.from_metadata(engine.metadata)
        foreign = contract is None
        if contract is None:
            contract = ModelContract(
                scale=scale or 1,
                input_name=engine.input_name,
                layout=layout or infer_layout(engine.input_shape),
                value_range=value_range or (0.0, 255.0),
                name=path.stem,
            )
            if scale is None:
                contract = _with_probed_scale(engine, contract)
            log.info("%s has no srgan contract; inferred %s", path, contract)
        elif scale is not None or layout is not None or value_range is not None:
            contract = replace(contract, scale=scale or contract.scale, layout=layout or contract.layout,
                               value_range=value_range or contract.value_range)
        up = cls(engine, contract, tile=tile, overlap=overlap, tile_batch=tile_batch, reload=reload,
                 precision_note=note, memory_budget=memory_budget)
        if foreign:
            _refuse_if_off(up, path)
        return up

    @property
    def scale(self) -> int:
        return self.contract.scale

    @property
    def precision(self) -> str:
        """What the backend computes in: ``f32``, ``bf16``, ``f16`` or ``int8``."""
        return getattr(self.backend, "precision", "f32")

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def release_memory(self) -> None:
        """Let the runtime give back what it keeps between runs (the intermediate buffers of OpenVINO's
        networks: this engine's and its float32 re-run's); the next run makes them again. For an engine that
        sits idle beside others (a worker's cache). A backend mid-run keeps its buffers."""
        for backend in (self.backend, self._f32):
            release = getattr(backend, "release_memory", None)
            if release is not None:
                release()

    def overlap_for(self, overlap: int | None = None) -> int:
        """The context a tile gets: ``overlap`` (default: the engine's), at least the model's minimum
        (its contract's ``tiling.min_overlap``)."""
        return max(self.overlap if overlap is None else overlap, self.contract.tiling.min_overlap)

    def tile_for(self, height: int, width: int, tile: int | str | None = None,
                 overlap: int | None = None) -> tuple[int, int]:
        """``(tile_h, tile_w)`` a ``height x width`` image runs with (``auto`` resolved against the memory
        budget, :func:`model.tiling.choose_tiles`, for the image with the model's pre-pad around it and
        :meth:`overlap_for`); ``(0, 0)`` runs it whole. A fixed tile not larger than the overlap a model needs
        grows to one pixel more (its windows are mostly that overlap anyway): the model's need, not a refusal of
        every job of it."""
        tile = self.tile if tile is None else tile
        overlap = self.overlap_for(overlap)
        if tile != "auto":
            side = int(tile)
            side = max(side, overlap + 1) if side > 0 else side  # 0: whole; < 0: refused by the plan
            return side, side
        pad = self.contract.tiling.pre_pad
        height, width = height + 2 * pad, width + 2 * pad
        per_px = getattr(self.backend, "working_bytes_per_output_pixel", 1024)
        host = default_memory_budget()
        device = device_memory_budget(self.backend.name)
        if device is not None:  # the network on a GPU: its budget there, the output strip's in host memory
            return choose_tiles(height, width, self.scale, overlap, self.memory_budget or device, per_px,
                                self.tile_batch, strip_budget=host)
        return choose_tiles(height, width, self.scale, overlap, self.memory_budget or host, per_px, self.tile_batch,
                            max_window=getattr(self.backend, "cache_window_pixels", None))

    def upscale(
        self,
        lr_hwc_u8: np.ndarray,
        *,
        tile: int | str | None = None,
        overlap: int | None = None,
        progress: Progress | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """Upscale an ``(H, W, 3)`` uint8 (or uint16) RGB image; returns ``(H*s, W*s, 3)`` of the same type."""
        h, w, c = _check_image(lr_hwc_u8)
        s = self.scale
        out = np.empty((h * s, w * s, c), lr_hwc_u8.dtype)
        for y0, rows in self.iter_strips(lr_hwc_u8, tile=tile, overlap=overlap, progress=progress,
                                         should_stop=should_stop):
            out[y0 : y0 + rows.shape[0]] = rows
        return out

    def iter_strips(
        self,
        lr_hwc_u8: np.ndarray,
        *,
        tile: int | str | None = None,
        overlap: int | None = None,
        progress: Progress | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first_output_row, rows)`` top to bottom as rows are finished (the input's type).

        With the model's ``tiling.pre_pad`` (``p``), the plan, the windows and the strips are those of the image
        with ``p`` pixels reflected around it (``(h + 2p) x (w + 2p)``; progress counts its tiles), and what is
        yielded is cropped back to the image's ``h*s x w*s``.
        """
        h, w, c = _check_image(lr_hwc_u8)
        overlap = self.overlap_for(overlap)
        pad = self.contract.tiling.pre_pad
        s = self.scale
        h, w = h + 2 * pad, w + 2 * pad  # from here on, the padded image's
        plan = TilePlan.make(h, w, self.tile_for(h - 2 * pad, w - 2 * pad, tile, overlap), overlap)
        keep_top, keep_bottom, keep_cols = pad * s, (h - pad) * s, slice(pad * s, (w - pad) * s)
        if plan.count == 1:  # one window, the whole (padded) image: every blending weight would be 1
            if should_stop is not None and should_stop():
                raise Canceled("canceled before the next tile")
            (row,), (col,) = plan.rows, plan.cols
            hr = self._infer([_window(lr_hwc_u8, row.window, col.window, pad)], overlap)[0]
            if progress is not None:
                progress(1, 1)
            yield 0, _to_type(hr[keep_top:keep_bottom, keep_cols], lr_hwc_u8.dtype)
            return
        # The weights of all tiles sum to exactly 1 at every pixel (model.tiling.axis_weights), so the strip
        # holds the blended picture itself: no weight sum to divide by.
        col_weights = [axis_weights(sp, w, plan.r_cols, s, sp.window[0] * s, sp.window[1] * s) for sp in plan.cols]
        done = 0
        acc = np.zeros((0, w * s, c), np.float32)
        acc_top = 0  # output row of acc[0]
        for j, row in enumerate(plan.rows):
            top, bottom = row.window[0] * s, row.window[1] * s
            # grow the strip down to this tile row's bottom
            grow = bottom - (acc_top + acc.shape[0])
            if grow > 0:
                acc = np.concatenate([acc, np.zeros((grow, w * s, c), np.float32)])
            # rows above acc_top are finished: this row's weight there is 0
            r0 = max(top, acc_top)
            wy = axis_weights(row, h, plan.r_rows, s, r0, bottom)
            windows = [_window(lr_hwc_u8, row.window, col.window, pad) for col in plan.cols]
            indices = list(range(len(plan.cols)))
            for batch_idx in iter_batches(indices, self.tile_batch):
                if should_stop is not None and should_stop():
                    raise Canceled("canceled before the next tile")
                outs = self._infer([windows[i] for i in batch_idx], overlap)
                for i, hr in zip(batch_idx, outs):
                    x0, x1 = plan.cols[i].window[0] * s, plan.cols[i].window[1] * s
                    blend_into(acc[r0 - acc_top : bottom - acc_top, x0:x1], hr[r0 - top :], wy, col_weights[i])
                done += len(batch_idx)
                if progress is not None:
                    progress(done, plan.count)
            finished = plan.finished_before(j) * s - acc_top
            if finished > 0:
                lo, hi = max(acc_top, keep_top), min(acc_top + finished, keep_bottom)  # the image's rows of them
                if hi > lo:
                    yield lo - keep_top, _to_type(acc[lo - acc_top : hi - acc_top, keep_cols], lr_hwc_u8.dtype)
                acc = acc[finished:].copy()
                acc_top += finished

    def _infer(self, tiles_hwc_u8: list[np.ndarray], overlap: int) -> np.ndarray:
        """:meth:`_run`, re-splitting on an out-of-memory error: a batch tile by tile, a tile into
        smaller tiles (down to ``MIN_AUTO_TILE``) blended as usual."""
        try:
            return self._run(tiles_hwc_u8)
        except OutOfMemory as exc:
            if len(tiles_hwc_u8) > 1:
                log.warning("%s; running the batch's %d tiles one by one", exc.message, len(tiles_hwc_u8))
                return np.concatenate([self._infer([t], overlap) for t in tiles_hwc_u8])
            th, tw = tiles_hwc_u8[0].shape[:2]
            half = (max(th, tw) + 1) // 2
            if half < MIN_AUTO_TILE or half <= overlap:
                raise
            log.warning("%s; re-splitting the %dx%d tile into %d-pixel tiles", exc.message, tw, th, half)
            self.oom_splits += 1
            # the tile is a window of the padded image already: its halves get no border of their own
            unpadded = replace(self.contract, tiling=replace(self.contract.tiling, pre_pad=0))
            sub = Upscaler(self.backend, unpadded, tile=half, overlap=overlap, reload=self.reload)
            sub._f32 = self._f32
            out = sub.upscale(tiles_hwc_u8[0]).astype(np.float32)[None] * np.float32(255.0 / _peak(tiles_hwc_u8[0]))
            self.oom_splits += sub.oom_splits
            self.f32_reruns += sub.f32_reruns
            return out

    def _run(self, tiles_hwc_u8: list[np.ndarray]) -> np.ndarray:
        """Run same-shaped uint8 tiles through the model; returns float (N, h*s, w*s, 3) in 0..255.

        At a reduced precision, tiles whose output has NaN/inf or is blank while
        their input is not are run again in float32; 16-bit tiles run in float32 from
        the start (bfloat16's 8-bit significand would cut them to about 8 bits).
        """
        if self.precision == "f32" or self.reload is None:
            return self._run_on(self.backend, tiles_hwc_u8, check_finite=True)
        if tiles_hwc_u8[0].dtype == np.uint16:
            if self._f32 is None:
                self._f32 = self.reload("f32")
            return self._run_on(self._f32, tiles_hwc_u8, check_finite=True)
        out = self._run_on(self.backend, tiles_hwc_u8, check_finite=False)
        bad = [i for i, (lr, hr) in enumerate(zip(tiles_hwc_u8, out)) if _bad_tile(lr, hr)]
        if bad:
            if self._f32 is None:
                self._f32 = self.reload("f32")
            log.warning("%d tile(s) of %s came out NaN or blank in %s: re-run in f32",
                        len(bad), self.contract.name, self.precision)
            out[bad] = self._run_on(self._f32, [tiles_hwc_u8[i] for i in bad], check_finite=True)
            self.f32_reruns += len(bad)
        return out

    def batch_input(self, tiles_hwc_u8: list[np.ndarray]) -> np.ndarray:
        """What the backend is fed for these same-shaped uint8 (or uint16) tiles (the contract's layout and
        value range)."""
        ct = self.contract
        lo, hi = ct.value_range
        batch = np.stack(tiles_hwc_u8).astype(np.float32)
        if _peak(tiles_hwc_u8[0]) != 255:
            batch *= np.float32(255.0 / _peak(tiles_hwc_u8[0]))  # the network's 0..255 scale, in float
        if (lo, hi) != (0.0, 255.0):
            batch = batch * np.float32((hi - lo) / 255.0) + np.float32(lo)
        if ct.layout == "NCHW":
            batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        return batch

    def _run_on(self, backend: Backend, tiles_hwc_u8: list[np.ndarray], *, check_finite: bool) -> np.ndarray:
        ct = self.contract
        lo, hi = ct.value_range
        batch = self.batch_input(tiles_hwc_u8)
        out = backend.run(batch)
        if ct.layout == "NCHW":
            out = out.transpose(0, 2, 3, 1)
        n, th, tw = batch.shape[0], tiles_hwc_u8[0].shape[0], tiles_hwc_u8[0].shape[1]
        expected = (n, th * ct.scale, tw * ct.scale, ct.channels)
        if out.shape != expected:
            raise InferenceError(f"model returned shape {out.shape} for tiles {batch.shape}, expected {expected}")
        if (lo, hi) != (0.0, 255.0):
            out = (out - np.float32(lo)) * np.float32(255.0 / (hi - lo))
        if check_finite and not np.isfinite(out).all():
            raise InferenceError("model returned NaN or infinite values")
        return out


def _bad_tile(lr: np.ndarray, hr: np.ndarray) -> bool:
    """NaN/inf in the output, or a blank output for an input that is not blank."""
    if not np.isfinite(hr).all():
        return True
    return float(np.ptp(hr)) < BLANK_RANGE and float(np.ptp(lr)) * 255.0 / _peak(lr) >= BLANK_INPUT_RANGE


def precision_test_card(size: int = CHECK_SIZE) -> np.ndarray:
    """A deterministic ``size x size`` RGB test card: gradients, stripes, an edge, mild noise."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    r = 255 * x
    g = 127.5 + 100 * np.sin(2 * np.pi * 5 * x) * np.cos(2 * np.pi * 3 * y)
    b = np.where(x + y > 1.0, 220.0, 35.0) + 30 * y
    noise = np.random.default_rng(0).normal(0, 6, (size, size, 3))
    return np.clip(np.stack([r, g, b], -1) + noise, 0, 255).astype(np.uint8)


def rgb_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two images on the 0..255 scale (inf when identical, nan when either has NaN)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def check_precision(reference: Backend, candidate: Backend, contract: ModelContract | None = None) -> float:
    """RGB PSNR of ``candidate``'s output against ``reference``'s (float32) on :func:`precision_test_card`;
    nan on NaN."""
    contract = contract or ModelContract.from_metadata(reference.metadata)
    if contract is None:
        contract = ModelContract(scale=1, input_name=reference.input_name, layout=infer_layout(reference.input_shape))
        contract = _with_probed_scale(reference, contract)
    img = precision_test_card()
    ref = Upscaler(reference, contract, tile=0)._run_on(reference, [img], check_finite=True)[0]
    got = Upscaler(candidate, contract, tile=0)._run_on(candidate, [img], check_finite=False)[0]
    if not np.isfinite(got).all():
        return float("nan")
    return rgb_psnr(np.clip(ref, 0, 255), np.clip(got, 0, 255))


def _mse_y(a: np.ndarray, b: np.ndarray, crop: int) -> float:
    ya, yb = rgb_to_y(a), rgb_to_y(b)
    if crop and min(ya.shape) > 2 * crop:
        ya, yb = ya[crop:-crop, crop:-crop], yb[crop:-crop, crop:-crop]
    return float(np.mean((ya - yb) ** 2))


def int8_cost(reference: Backend, candidate: Backend, contract: ModelContract | None = None) -> tuple[float, float]:
    """Mean and worst Y-PSNR cost in dB of ``candidate`` (int8) against ``reference`` (float32) on the int8 probe
    images: synthetic photos (:data:`INT8_PROBE_COUNT`, never Set5/Set14), downscaled by the model's scale, the
    image before downscaling as the ground truth (border of ``scale`` cropped, the evaluation protocol); inf
    when the candidate gives NaN."""
    contract = contract or ModelContract.from_metadata(reference.metadata)
    if contract is None:
        contract = ModelContract(scale=1, input_name=reference.input_name, layout=infer_layout(reference.input_shape))
        contract = _with_probed_scale(reference, contract)
    s = contract.scale
    costs = []
    for hr in calibration_images(INT8_PROBE_COUNT, INT8_PROBE_SIZE * s, seed=INT8_PROBE_SEED):
        lr = bicubic_downscale(hr, s) if s > 1 else hr
        ref = Upscaler(reference, contract, tile=0)._run_on(reference, [lr], check_finite=True)[0]
        got = Upscaler(candidate, contract, tile=0)._run_on(candidate, [lr], check_finite=False)[0]
        if not np.isfinite(got).all():
            return float("inf"), float("inf")
        ref_mse = _mse_y(np.clip(np.rint(ref), 0, 255), hr, s)
        got_mse = _mse_y(np.clip(np.rint(got), 0, 255), hr, s)
        costs.append(10 * np.log10(max(got_mse, 1e-6) / max(ref_mse, 1e-6)))
    return float(np.mean(costs)), float(np.max(costs))


def _auto_precision(path: Path, reload: BackendFactory, cache: CompileCache | None,
                    backend: str, int8: bool = True) -> tuple[Backend, str]:
    """``auto``: int8 where it is native and passes its probe (:func:`_int8_checked`), else the fastest precision
    the device runs natively, kept when it passes the check against float32; with a ``cache``, the decision of
    an earlier process for the same network, runtime, int8 scheme and CPU (one compile, no check)."""
    tried = f"int8-{SCHEME_VERSION}" if int8 else "no-int8"
    key = cache.precision_key(content_hash(path), backend, f"{runtime_version(backend)}|{tried}") if cache else None
    known = cache.precision(key) if cache is not None and key is not None else None
    if known is not None:
        precision, note = known
        log.info("%s: auto's decision of an earlier process on this machine: %s", path.name, precision)
        return reload(precision), note
    engine = reload("f32")
    chosen, int8_note = _int8_checked(engine, reload, cache) if cache is not None and int8 else (None, None)
    if chosen is not None and int8_note is not None:
        engine, note = chosen, int8_note
    else:
        candidate = native_precision(engine.name)
        if candidate != "f32":
            engine, note = _checked(engine, reload(candidate), candidate)
        else:
            note = f"auto: {engine.name} runs f32 natively"
        if int8_note:
            note += f"; {int8_note}"
    if cache is not None and key is not None:
        cache.remember_precision(key, engine.precision, note)
    return engine, note


def _int8_checked(reference: Backend, reload: BackendFactory,
                  cache: CompileCache | None) -> tuple[Backend | None, str | None]:
    """int8 for ``auto``: (the int8 backend, why) when OpenVINO runs on a CPU with AMX-INT8, VNNI or AVX2 and int8
    passes :func:`int8_cost`'s bounds; else (None, why not, or None where int8 is not a candidate at all).

    Only with a compile cache: quantizing takes tens of seconds, once per network and machine with one."""
    flags = cpu_flags()
    # OpenVINO on a CPU only: where the scheme's speed and cost were measured (ONNX Runtime runs int8 when asked)
    if reference.name != "openvino:CPU" or not int8_native(flags) or cache is None:
        return None, None
    try:
        candidate = reload("int8")
    except ModelError as exc:
        log.info("int8 not available for auto: %s", exc.message)
        return None, f"int8 not built ({exc.message})"
    mean, worst = int8_cost(reference, candidate)
    probe = f"{mean:.3f} dB mean, {worst:.3f} worst against f32 on {INT8_PROBE_COUNT} synthetic probe images"
    if mean <= INT8_MAX_COST_DB and worst <= INT8_MAX_WORST_DB:
        rest = getattr(candidate, "float_precision", "f32")
        return candidate, f"auto: int8 on {int8_units(flags)} ({probe}; the rest in {rest}; {SCHEME_SHORT})"
    log.warning("int8 failed its probe (%s; needs <= %.2f and <= %.2f): not used", probe, INT8_MAX_COST_DB,
                INT8_MAX_WORST_DB)
    return None, f"int8 failed its probe ({probe})"


def _checked(reference: Backend, candidate: Backend, precision: str) -> tuple[Backend, str]:
    """``candidate`` when it passes the check against ``reference``, else ``reference``; and why."""
    if candidate.precision == reference.precision:
        return reference, f"auto: {precision} runs as {candidate.precision} on {candidate.name}"
    db = check_precision(reference, candidate)
    if db >= CHECK_MIN_PSNR_DB:
        return candidate, f"auto: {candidate.precision} ({db:.1f} dB against f32 on the probe image)"
    log.warning("%s on %s failed the check (%.1f dB against f32, needs %.0f): running f32",
                precision, candidate.name, db, CHECK_MIN_PSNR_DB)
    return reference, f"auto: {precision} failed the check ({db:.1f} dB against f32); f32"


def _validate_tile(tile: int | str, overlap: int) -> None:
    if tile == "auto":
        validate_tiling(0, overlap)
    elif isinstance(tile, int) and not isinstance(tile, bool):
        validate_tiling(tile, overlap)
    else:
        raise InvalidParameter(f"tile must be an integer >= 0 or 'auto', got {tile!r}")


def reflect_indices(start: int, stop: int, pad: int, length: int) -> np.ndarray:
    """Indices into an axis of ``length`` of positions ``[start, stop)`` of that axis with ``pad`` pixels reflected
    on both sides (numpy's ``reflect``: the border pixel is not repeated; again and again when ``pad`` is longer
    than the axis)."""
    positions = np.arange(start - pad, stop - pad)
    if length == 1:
        return np.zeros_like(positions)
    period = 2 * (length - 1)
    folded = np.mod(positions, period)
    return np.where(folded < length, folded, period - folded)


def _window(img: np.ndarray, rows: tuple[int, int], cols: tuple[int, int], pad: int) -> np.ndarray:
    """The ``rows x cols`` window (coordinates of the image with ``pad`` pixels reflected around it) of ``img``:
    a view without a pre-pad; otherwise gathered through :func:`reflect_indices` (only a window-sized copy)."""
    if pad == 0:
        return img[rows[0] : rows[1], cols[0] : cols[1]]
    h, w = img.shape[:2]
    return img[np.ix_(reflect_indices(*rows, pad, h), reflect_indices(*cols, pad, w))]


def _peak(img: np.ndarray) -> int:
    """The largest value of an image's type: 255 (uint8) or 65535 (uint16)."""
    return 65535 if img.dtype == np.uint16 else 255


def _check_image(img: np.ndarray) -> tuple[int, int, int]:
    if img.dtype not in (np.uint8, np.uint16) or img.ndim != 3 or img.shape[2] != 3:
        raise InvalidParameter(f"expected an (H, W, 3) uint8 or uint16 RGB array, got {img.dtype} {img.shape}")
    h, w, c = img.shape
    if h == 0 or w == 0:
        raise InvalidParameter(f"empty image {img.shape}")
    return h, w, c


def blend_into(dst: np.ndarray, tile: np.ndarray, wy: np.ndarray, wx: np.ndarray) -> None:
    """Add ``tile`` weighted by ``wy (rows) x wx (columns)`` into ``dst``, in place (no tile-sized temporary).

    Where both weights are exactly 1 every other tile's weight is exactly 0 (the weights sum to 1 and the
    steps saturate: :func:`model.tiling.axis_weights`), so that block is copied, not multiplied and added;
    only the ramps around it are.
    """
    ya, yb = _plateau(wy)
    xa, xb = _plateau(wx)
    for rows in (slice(0, ya), slice(yb, len(wy))):  # the ramps above and below: every column weighted
        if rows.stop > rows.start:
            band = tile[rows]
            np.multiply(band, (wy[rows, None] * wx[None, :])[:, :, None], out=band)
            dst[rows] += band
    mid = slice(ya, yb)
    for cols in (slice(0, xa), slice(xb, len(wx))):  # the ramps left and right of the block
        if cols.stop > cols.start and yb > ya:
            band = tile[mid, cols]
            np.multiply(band, wx[None, cols, None], out=band)
            dst[mid, cols] += band
    if yb > ya and xb > xa:
        dst[mid, xa:xb] = tile[mid, xa:xb]


def _plateau(weights: np.ndarray) -> tuple[int, int]:
    """``[a, b)``: the run of weights exactly 1 (a ramp up, 1s, a ramp down); ``(n, n)`` where there is none."""
    ones = np.flatnonzero(weights == 1)
    if ones.size == 0:
        return len(weights), len(weights)
    return int(ones[0]), int(ones[-1]) + 1


def _to_type(acc: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float ``acc`` (0..255) rounded to ``dtype`` (uint8, or uint16 on 0..65535), in place in ``acc``."""
    peak = 65535 if dtype == np.uint16 else 255
    if peak != 255:
        np.multiply(acc, np.float32(peak / 255.0), out=acc)
    np.rint(acc, out=acc)
    np.clip(acc, 0, peak, out=acc)
    return acc.astype(dtype)


def _refuse_if_off(up: Upscaler, path: Path) -> None:
    """Run the probe image through a foreign file as read; ModelError names what looks wrong."""
    lr = probe_image()
    try:
        out = up._run_on(up.backend, [lr], check_finite=False)[0]
    except InferenceError:
        return  # the shapes do not fit: the first image run says so with its own message
    wrong = judge_probe(out, lr, up.scale)
    if wrong:
        ct = up.contract
        raise ModelError(f"{path} has no srgan contract and, read as {ct.layout} with values "
                         f"{ct.value_range[0]:g}..{ct.value_range[1]:g}, fails the probe: {wrong}")


def _with_probed_scale(backend: Backend, contract: ModelContract) -> ModelContract:
    """Find the scale of a model without metadata by running a small blank image."""
    lo = contract.value_range[0]
    shape = (1, PROBE_SIZE, PROBE_SIZE, 3) if contract.layout == "NHWC" else (1, 3, PROBE_SIZE, PROBE_SIZE)
    out = backend.run(np.full(shape, lo, np.float32))
    hw = out.shape[1:3] if contract.layout == "NHWC" else out.shape[2:4]
    if hw[0] != hw[1] or hw[0] % PROBE_SIZE:
        raise ModelError(f"cannot infer the scale: a {PROBE_SIZE}x{PROBE_SIZE} probe gave {tuple(out.shape)}")
    return ModelContract(**{**contract.__dict__, "scale": hw[0] // PROBE_SIZE})
