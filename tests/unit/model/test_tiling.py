import numpy as np
import pytest

from model.errors import InvalidParameter
from model.tiling import TilePlan, axis_weights, plan_axis, validate_tiling

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("length,tile,overlap", [(257, 128, 16), (131, 64, 8), (100, 33, 32), (7, 3, 1), (50, 50, 10),
                                                 (300, 128, 0), (129, 128, 16), (1000, 96, 24)])
@pytest.mark.parametrize("scale", [1, 2, 4])
def test_axis_weights_are_a_partition_of_unity(length, tile, overlap, scale):
    spans, r = plan_axis(length, tile, overlap)
    total = np.zeros(length * scale, np.float64)
    for span in spans:
        w = axis_weights(span, length, r, scale, 0, length * scale)
        assert (w >= 0).all() and (w <= 1).all()
        support = np.nonzero(w)[0]
        # non-zero only inside the window the tile was run on
        assert support.min() >= span.window[0] * scale and support.max() < span.window[1] * scale
        total += w
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


@pytest.mark.parametrize("length,tile,overlap", [(257, 128, 16), (131, 50, 7), (1000, 96, 24), (64, 128, 16)])
def test_spans_cover_axis_with_equal_windows_and_enough_context(length, tile, overlap):
    spans, _ = plan_axis(length, tile, overlap)
    assert spans[0].core[0] == 0 and spans[-1].core[1] == length
    assert all(a.core[1] == b.core[0] for a, b in zip(spans, spans[1:]))
    assert len({s.window[1] - s.window[0] for s in spans}) == 1
    for s in spans:
        assert s.window[1] - s.window[0] <= tile + 2 * overlap or tile >= length  # the memory bound
        assert s.core[1] > s.core[0]
        assert 0 <= s.window[0] <= max(0, s.core[0] - overlap)
        assert s.window[1] >= min(length, s.core[1] + overlap)


@pytest.mark.parametrize("length,tile,overlap", [(512, 256, 8), (2048, 256, 8), (1000, 96, 24), (257, 128, 16),
                                                 (131, 50, 7)])
def test_windows_recompute_only_the_overlaps_between_neighbours(length, tile, overlap):
    """n windows cost at most length + 2*overlap*(n-1) pixels, plus rounding (one pixel per window)."""
    spans, _ = plan_axis(length, tile, overlap)
    n = len(spans)
    assert n == -(-length // tile)
    assert sum(s.window[1] - s.window[0] for s in spans) <= length + 2 * overlap * (n - 1) + n
    assert spans[0].window[0] == 0 and spans[-1].window[1] == length


def test_weights_are_flat_in_core_and_at_image_border():
    spans, r = plan_axis(300, 100, 20)
    assert [s.core for s in spans] == [(0, 106), (106, 193), (193, 300)] and r == 10
    first = axis_weights(spans[0], 300, r, 1, 0, 300)
    assert (first[:96] == 1).all()  # image border and core: flat 1
    middle = axis_weights(spans[1], 300, r, 1, 0, 300)
    assert (middle[116:183] == 1).all() and middle[101] < 1 and middle[95] == 0


def test_tile_zero_or_larger_than_image_is_one_tile():
    assert TilePlan.make(131, 257, 0, 0).count == 1
    assert TilePlan.make(131, 257, 512, 16).count == 1
    assert TilePlan.make(131, 257, 128, 16).count == 2 * 3


@pytest.mark.parametrize("tile,overlap", [(64, 64), (64, 80), (-1, 0), (64, -2)])
def test_invalid_settings_are_refused(tile, overlap):
    with pytest.raises(InvalidParameter):
        validate_tiling(tile, overlap)
    with pytest.raises(InvalidParameter):
        TilePlan.make(100, 100, tile, overlap)
