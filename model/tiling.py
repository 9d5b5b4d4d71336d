"""Tile plans and blending weights: pure numpy, no model.

An axis of length ``L`` is cut into ``n = ceil(L / tile)`` balanced *cores*
(each at most ``tile`` long). Every core is run inside a *window* that adds
``overlap`` pixels of context on each interior side. All windows of an axis
have the same length (a window at the border is shifted inwards rather than
clipped), so the tiles of a row can be batched through one session call.

Blending: at each boundary ``c`` between two cores, the weight of the left
tile ramps from 1 down to 0 across ``[c - r, c + r)`` while the right tile's
ramps from 0 up to 1, with ``r = overlap / 2`` (in low-resolution pixels,
evaluated at output pixel centres). Weights are flat 1 in a core and along the
image border, and the weights of an axis form a partition of unity; a tile's
2-D weight is the product of its row and column weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from model.errors import InvalidParameter


@dataclass(frozen=True)
class Span:
    """One tile along one axis, in input pixels.

    ``core`` is the part this tile owns; ``window`` is what is fed to the
    model (core plus context); ``support`` is where its blending weight is
    non-zero (core plus the ramps).
    """

    core: tuple[int, int]
    window: tuple[int, int]
    support: tuple[int, int]


def validate_tiling(tile: int, overlap: int) -> None:
    """Refuse settings that cannot give a correct blend."""
    if tile < 0 or overlap < 0:
        raise InvalidParameter(f"tile and overlap must be >= 0, got tile={tile}, overlap={overlap}")
    if tile and overlap >= tile:
        raise InvalidParameter(f"overlap ({overlap}) must be smaller than tile ({tile})")


def axis_windows(length: int, tile: int, overlap: int) -> tuple[int, int]:
    """How many windows :func:`plan_axis` cuts an axis into, and their length."""
    if tile == 0 or tile >= length:
        return 1, length
    n = math.ceil(length / tile)
    size = math.ceil((length + 2 * overlap * (n - 1)) / n)
    return (1, length) if size >= length else (n, size)


def plan_axis(length: int, tile: int, overlap: int) -> tuple[list[Span], float]:
    """Cut one axis into spans; returns the spans and the ramp half-width ``r``.

    ``tile=0`` (or a tile at least as long as the axis) gives a single span.
    Otherwise ``n = ceil(length / tile)`` windows of one size ``w`` are spread
    evenly from border to border, with ``w`` the smallest size that leaves at
    least ``2 * overlap`` pixels between neighbours: a border window needs
    context on one side only, so its core is longer than an interior one, and
    the windows recompute ``2 * overlap * (n - 1)`` pixels in all (not
    ``2 * overlap * n``). Windows are at most ``tile + 2 * overlap`` long.
    Each core boundary lies in the middle of its two windows' overlap.
    """
    validate_tiling(tile, overlap)
    if length <= 0:
        raise InvalidParameter(f"image side must be > 0, got {length}")
    n, size = axis_windows(length, tile, overlap)
    if n == 1:
        return [Span((0, length), (0, length), (0, length))], 0.0
    starts = [round(i * (length - size) / (n - 1)) for i in range(n)]
    # neighbours overlap by size - step >= 2 * overlap (size - 2 * overlap is an integer >= the mean step)
    bounds = [0] + [s + (prev + size - s) // 2 for prev, s in zip(starts, starts[1:])] + [length]
    shortest = min(b - a for a, b in zip(bounds, bounds[1:]))
    # Ramps of neighbouring boundaries must not cross: 2r <= shortest core.
    r = min(overlap / 2, shortest / 2)
    spans = []
    for start, a, b in zip(starts, bounds, bounds[1:]):
        lo = a - r if a > 0 else 0
        hi = b + r if b < length else length
        spans.append(Span((a, b), (start, start + size), (math.floor(lo), math.ceil(hi))))
    return spans, r


MIN_AUTO_TILE = 32
"""The smallest tile ``auto`` picks (and re-splitting after an out-of-memory error goes down to)."""
STRIP_BYTES_PER_OUTPUT_PIXEL = 32
"""The output strip being blended: float32 RGB sums and weights (16 B per output pixel), twice while it grows."""


def tile_memory(window_h: int, window_w: int, image_w: int, scale: int, bytes_per_output_pixel: int,
                batch: int = 1) -> int:
    """Working bytes of running ``batch`` windows of ``window_h x window_w`` over an image ``image_w`` wide."""
    model = batch * window_h * window_w * scale * scale * bytes_per_output_pixel
    strip = window_h * scale * image_w * scale * STRIP_BYTES_PER_OUTPUT_PIXEL
    return model + strip


def choose_tiles(height: int, width: int, scale: int, overlap: int, budget: int, bytes_per_output_pixel: int,
                 batch: int = 1, strip_budget: int | None = None, max_window: int | None = None) -> tuple[int, int]:
    """``(tile_h, tile_w)`` of the plan that runs the fewest pixels (the image plus the recomputed overlaps)
    while its working memory (:func:`tile_memory`) fits ``budget``; ``(0, 0)`` runs the whole image; sides
    never below ``MIN_AUTO_TILE``; between plans that run as many pixels, the fewer tiles, then the less
    memory. Tiles need not be square: a 512x512 input whose whole image does not fit runs as two
    full-width windows of 264x512 (3% recomputed) rather than 2x2 of 264x264 (6%) when they fit.

    ``strip_budget``: the network runs elsewhere (a GPU): ``budget`` is then the device's, for the
    network's working memory alone, and the output strip (host memory) must fit ``strip_budget``.

    ``max_window``: the most input pixels (overlap included) a window may have, where a CPU runs windows that
    large faster per pixel than larger ones (their activations stay in its caches: the backend's
    ``cache_window_pixels``); a whole image larger than that then runs in tiles even when it fits the budget.
    """
    smallest = max(MIN_AUTO_TILE, overlap + 1)

    def fits(window_h: int, window_w: int) -> bool:
        if max_window is not None and window_h * window_w > max_window:
            return False
        net = tile_memory(window_h, window_w, 0, scale, bytes_per_output_pixel, batch)
        strip = tile_memory(window_h, 0, width, scale, 0)
        return net + strip <= budget if strip_budget is None else net <= budget and strip <= strip_budget

    best: tuple[tuple[int, int, int], tuple[int, int]] | None = None
    for tile_h, (n_h, window_h) in _axis_candidates(height, overlap, smallest):
        for tile_w, (n_w, window_w) in _axis_candidates(width, overlap, smallest):
            if fits(window_h, window_w):  # the fewest columns that fit: the least recomputed for these rows
                memory = tile_memory(window_h, window_w, width, scale, bytes_per_output_pixel, batch)
                key = (n_h * window_h * n_w * window_w, n_h * n_w, memory)
                if best is None or key < best[0]:
                    best = (key, (tile_h, tile_w))
                break
    if best is None and max_window is not None:  # no window that small fits: as if there were no preference
        return choose_tiles(height, width, scale, overlap, budget, bytes_per_output_pixel, batch, strip_budget)
    return (smallest, smallest) if best is None else best[1]


def _axis_candidates(length: int, overlap: int, smallest: int) -> Iterator[tuple[int, tuple[int, int]]]:
    """``(tile, (windows, window length))`` for 1, 2, 3... windows along an axis, tiles no smaller than
    ``smallest`` (tile 0: the whole axis)."""
    yield 0, (1, length)
    last = 1
    for n in range(2, length // smallest + 1):
        tile = math.ceil(length / n)
        windows = axis_windows(length, tile, overlap)
        if windows[0] > last:
            last = windows[0]
            yield tile, windows


def _step_up(coords: np.ndarray, boundary: float, r: float) -> np.ndarray:
    """0 before the ramp around ``boundary``, 1 after it, a linear ramp of width 2r between."""
    if r <= 0:
        return (coords >= boundary).astype(np.float32)
    return np.clip((coords - (boundary - r)) / (2 * r), 0.0, 1.0).astype(np.float32)


def axis_weights(span: Span, length: int, r: float, scale: int, lo: int, hi: int) -> np.ndarray:
    """Blending weight of ``span`` at output pixels ``[lo, hi)`` (output coordinates).

    The weight is ``up(core start) - up(core end)``: summed over all spans of
    an axis the terms telescope to exactly 1 everywhere.
    """
    centres = (np.arange(lo, hi, dtype=np.float64) + 0.5) / scale
    a, b = span.core
    up_a = np.ones_like(centres, dtype=np.float32) if a == 0 else _step_up(centres, a, r)
    up_b = np.zeros_like(centres, dtype=np.float32) if b == length else _step_up(centres, b, r)
    return up_a - up_b


@dataclass(frozen=True)
class TilePlan:
    """Tiles of a ``height x width`` image: ``rows x cols`` spans."""

    height: int
    width: int
    rows: list[Span]
    cols: list[Span]
    r_rows: float
    r_cols: float

    @classmethod
    def make(cls, height: int, width: int, tile: int | tuple[int, int], overlap: int) -> TilePlan:
        """``tile``: one side for both axes, or ``(tile_h, tile_w)``."""
        tile_h, tile_w = (tile, tile) if isinstance(tile, int) else tile
        rows, r_rows = plan_axis(height, tile_h, overlap)
        cols, r_cols = plan_axis(width, tile_w, overlap)
        return cls(height, width, rows, cols, r_rows, r_cols)

    @property
    def count(self) -> int:
        return len(self.rows) * len(self.cols)

    def finished_before(self, row_index: int) -> int:
        """Input rows that no tile row after ``row_index`` contributes to."""
        if row_index + 1 >= len(self.rows):
            return self.height
        return self.rows[row_index + 1].support[0]


def iter_batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
