import threading
from dataclasses import replace

import numpy as np
import pytest

from bench.tiny_models import make_nearest_model
from model.contract import ModelContract, Tiling
from model.engine import Upscaler, blend_into, reflect_indices
from model.errors import Canceled, InferenceError, InvalidParameter, ModelError, OutOfMemory
from model.tiling import TilePlan, axis_weights, axis_windows, choose_tiles, tile_memory

pytestmark = pytest.mark.unit


def nearest(img, s=4):
    return img.repeat(s, axis=0).repeat(s, axis=1)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize(
    "tile,overlap,batch",
    [(128, 16, 1), (64, 8, 3), (50, 7, 2), (300, 16, 1), (128, 0, 1), (33, 32, 4), (7, 3, 8), (0, 0, 1)],
)
def test_tiled_equals_untiled_on_exact_model(nearest_path, rng, backend, tile, overlap, batch):
    img = rng.integers(0, 256, (131, 257, 3), dtype=np.uint8)
    up = Upscaler.from_file(nearest_path, backend=backend, tile=tile, overlap=overlap, tile_batch=batch)
    whole = up.upscale(img, tile=0)
    np.testing.assert_array_equal(whole, nearest(img))
    np.testing.assert_array_equal(up.upscale(img), whole)


def test_one_window_skips_blending_but_not_progress_or_cancel(nearest_path, rng):
    """A whole image in one window is the network's output rounded (no blending weights): the same pixels as the
    blended path, one progress call, and a cancel before it stops it."""
    img = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
    up = Upscaler.from_file(nearest_path, backend="onnxruntime", tile=0, overlap=0)
    calls: list[tuple[int, int]] = []
    strips = list(up.iter_strips(img, progress=lambda done, total: calls.append((done, total))))
    assert [y0 for y0, _ in strips] == [0] and calls == [(1, 1)]
    np.testing.assert_array_equal(strips[0][1], nearest(img))
    with pytest.raises(Canceled):
        up.upscale(img, should_stop=lambda: True)


def test_strips_are_bounded_and_cover_every_row_once(nearest_path, rng):
    img = rng.integers(0, 256, (300, 90, 3), dtype=np.uint8)
    up = Upscaler.from_file(nearest_path, backend="onnxruntime", tile=64, overlap=8)
    rows_seen, heights = 0, []
    for y0, rows in up.iter_strips(img):
        assert y0 == rows_seen
        rows_seen += rows.shape[0]
        heights.append(rows.shape[0])
    assert rows_seen == 1200 and len(heights) == 5
    assert max(heights) <= (64 + 2 * 8) * 4


def test_progress_reports_every_tile_and_ends_at_total(nearest_path, rng):
    img = rng.integers(0, 256, (100, 150, 3), dtype=np.uint8)
    calls = []
    Upscaler.from_file(nearest_path, backend="onnxruntime", tile=40, overlap=4, tile_batch=2).upscale(
        img, progress=lambda done, total: calls.append((done, total))
    )
    totals = {t for _, t in calls}
    assert totals == {3 * 4}
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and calls[-1][0] == 12


def test_should_stop_cancels_between_tiles(nearest_path, rng):
    img = rng.integers(0, 256, (100, 100, 3), dtype=np.uint8)
    seen = []
    up = Upscaler.from_file(nearest_path, backend="onnxruntime", tile=30, overlap=4)
    with pytest.raises(Canceled):
        up.upscale(img, progress=lambda d, t: seen.append(d), should_stop=lambda: len(seen) >= 2)
    assert len(seen) == 2


def test_concurrent_calls_give_the_same_results(nearest_path, rng):
    up = Upscaler.from_file(nearest_path, backend="onnxruntime", tile=48, overlap=8)
    images = [rng.integers(0, 256, (97 + i, 61 + 2 * i, 3), dtype=np.uint8) for i in range(6)]
    results: dict[int, np.ndarray] = {}

    def work(i):
        results[i] = up.upscale(images[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, img in enumerate(images):
        np.testing.assert_array_equal(results[i], nearest(img))


def test_foreign_model_scale_is_probed_and_layout_inferred(tmp_path, rng):
    path = make_nearest_model(tmp_path / "foreign.onnx", scale=2, layout="NCHW", with_contract=False)
    up = Upscaler.from_file(path, backend="onnxruntime", tile=32, overlap=4)
    assert up.scale == 2 and up.contract.layout == "NCHW"
    img = rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)
    np.testing.assert_array_equal(up.upscale(img), nearest(img, 2))


def test_contract_round_trips_through_metadata():
    c = ModelContract(scale=4, name="x", version="3", metrics={"set5_psnr_y": 30.5})
    assert ModelContract.from_metadata(c.to_metadata()) == c
    assert ModelContract.from_metadata({}) is None
    assert "tiling" not in c.to_metadata()["srgan_contract"], "a contract without tiling is stored as before"
    tiled = replace(c, tiling=Tiling(min_overlap=24, pre_pad=10))
    assert ModelContract.from_metadata(tiled.to_metadata()) == tiled
    with pytest.raises(ValueError):
        Tiling(pre_pad=-1)


class BrokenBackend:
    name, precision, input_name, input_shape = "broken", "f32", "lr", ["n", "h", "w", 3]
    metadata: dict[str, str] = {}
    working_bytes_per_output_pixel = 1024
    cache_window_pixels: int | None = None

    def __init__(self, fail_on_call: int):
        self.calls, self.fail_on_call = 0, fail_on_call

    def run(self, batch):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise InferenceError("tile exploded")
        return np.repeat(np.repeat(batch, 4, axis=1), 4, axis=2)


def test_a_failing_tile_fails_the_image_instead_of_being_skipped(rng):
    up = Upscaler(BrokenBackend(fail_on_call=3), ModelContract(scale=4), tile=20, overlap=2)
    with pytest.raises(InferenceError, match="tile exploded"):
        up.upscale(rng.integers(0, 256, (60, 60, 3), dtype=np.uint8))


def test_wrong_output_shape_is_an_inference_error(rng):
    up = Upscaler(BrokenBackend(fail_on_call=0), ModelContract(scale=2), tile=0, overlap=0)
    with pytest.raises(InferenceError, match="shape"):
        up.upscale(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8))


def test_bad_inputs_and_settings_are_refused(nearest_path):
    with pytest.raises(InvalidParameter):
        Upscaler.from_file(nearest_path, backend="onnxruntime", tile=16, overlap=16)
    up = Upscaler.from_file(nearest_path, backend="onnxruntime")
    with pytest.raises(InvalidParameter):
        up.upscale(np.zeros((10, 10), np.uint8))
    with pytest.raises(InvalidParameter):
        up.upscale(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(InvalidParameter):
        up.upscale(np.zeros((10, 10, 3), np.uint8), tile=-4)


def test_missing_or_corrupt_model_is_a_model_error(tmp_path):
    with pytest.raises(ModelError):
        Upscaler.from_file(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(ModelError):
        Upscaler.from_file(bad, backend="onnxruntime")


def _with_tiling(up: Upscaler, tiling: Tiling, **options) -> Upscaler:
    """``up``'s network with ``tiling`` in its contract (what an imported file's contract states)."""
    return Upscaler(up.backend, replace(up.contract, tiling=tiling), **options)


def _reflected(img: np.ndarray, pad: int) -> np.ndarray:
    return np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")


@pytest.mark.parametrize("length", [1, 2, 3, 7, 40])
@pytest.mark.parametrize("pad", [0, 1, 5, 10])
def test_reflect_indices_are_numpys_reflect(length, pad):
    axis = np.arange(length)
    np.testing.assert_array_equal(axis[reflect_indices(0, length + 2 * pad, pad, length)],
                                  np.pad(axis, pad, mode="reflect"))
    end = length + 2 * pad - 1  # a window inside the padded axis
    np.testing.assert_array_equal(axis[reflect_indices(1, end, pad, length)], np.pad(axis, pad, mode="reflect")[1:end])


@pytest.mark.parametrize("tile,overlap", [(0, 0), (16, 4), (24, 6), (33, 8)])
def test_pre_pad_is_a_whole_image_run_of_the_reflected_image_cropped(conv_path, rng, tile, overlap):
    """The output keeps the image's size, and is the network's output for the image with ``pre_pad`` pixels
    reflected around it, cut back: whole (the same bits) or tiled (the tiny model sees 2 pixels: exact up to
    rounding); its border is not the zero-padded run's, its inside is."""
    img = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    plain = Upscaler.from_file(conv_path, backend="onnxruntime", tile=0, overlap=0)
    padded = _with_tiling(plain, Tiling(pre_pad=5), tile=tile, overlap=overlap)
    out = padded.upscale(img)
    assert out.shape == (4 * 37, 4 * 53, 3) and out.dtype == np.uint8
    reference = plain.upscale(_reflected(img, 5))[20:-20, 20:-20]
    if tile == 0:
        np.testing.assert_array_equal(out, reference)
    assert np.abs(out.astype(int) - reference).max() <= 1
    zero_padded = plain.upscale(img).astype(int)
    ring = np.ones(out.shape[:2], bool)
    ring[8:-8, 8:-8] = False  # two LR pixels from the edge: where zero padding reaches
    assert np.abs(out.astype(int) - zero_padded)[ring].mean() > 1, "the border sees the picture, not zeros"
    assert np.abs(out.astype(int) - zero_padded)[~ring].max() <= 1


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_pre_pad_keeps_strips_progress_and_16_bits_exact(nearest_path, rng, dtype):
    """On the exact (pointwise) model any pre-pad must give the plain result: the crop of every strip is right.
    Progress counts the tiles of the padded image's plan."""
    peak = np.iinfo(dtype).max
    img = rng.integers(0, peak + 1, (61, 45, 3), dtype=np.int64).astype(dtype)
    plain = Upscaler.from_file(nearest_path, backend="onnxruntime", tile=0, overlap=0)
    up = _with_tiling(plain, Tiling(pre_pad=7), tile=20, overlap=4)
    calls: list[tuple[int, int]] = []
    rows_seen = 0
    for y0, rows in up.iter_strips(img, progress=lambda done, total: calls.append((done, total))):
        assert y0 == rows_seen and rows.dtype == dtype
        np.testing.assert_array_equal(rows, nearest(img)[y0 : y0 + rows.shape[0]])
        rows_seen += rows.shape[0]
    assert rows_seen == 4 * 61
    total = TilePlan.make(61 + 14, 45 + 14, 20, 4).count
    assert total == 4 * 3 and calls[-1] == (total, total) and {t for _, t in calls} == {total}
    np.testing.assert_array_equal(_with_tiling(plain, Tiling(pre_pad=30), tile=0).upscale(img), nearest(img))


def test_the_models_minimum_overlap_is_used_when_larger(nearest_path, rng):
    """The windows the network sees are those of the model's minimum overlap (12) where the engine's (4) is
    smaller, and of the engine's where it is larger; a fixed tile that is not larger than the minimum grows past
    it (a valid plan, the same picture) instead of failing every image."""
    img = rng.integers(0, 256, (100, 100, 3), dtype=np.uint8)
    plain = Upscaler.from_file(nearest_path, backend="onnxruntime", tile=0, overlap=0)

    def window_shapes(up: Upscaler) -> set[tuple[int, ...]]:
        seen: set[tuple[int, ...]] = set()
        run = up.backend.run

        class Recording:
            def __getattr__(self, name):
                return getattr(up.backend, name)

            def run(self, batch):
                seen.add(batch.shape[1:3])
                return run(batch)

        Upscaler(Recording(), up.contract, tile=up.tile, overlap=up.overlap).upscale(img)
        return seen

    needs_12 = _with_tiling(plain, Tiling(min_overlap=12), tile=32, overlap=4)
    assert needs_12.overlap_for() == 12 and needs_12.overlap_for(20) == 20
    assert window_shapes(needs_12) == window_shapes(_with_tiling(plain, Tiling(), tile=32, overlap=12))
    assert window_shapes(needs_12) != window_shapes(_with_tiling(plain, Tiling(), tile=32, overlap=4))
    np.testing.assert_array_equal(needs_12.upscale(img), nearest(img))
    small_tile = _with_tiling(plain, Tiling(min_overlap=12), tile=12, overlap=4)
    assert small_tile.tile_for(100, 100) == (13, 13) and small_tile.tile_for(100, 100, tile=0) == (0, 0)
    np.testing.assert_array_equal(small_tile.upscale(img), nearest(img))
    with pytest.raises(InvalidParameter):
        _with_tiling(plain, Tiling(min_overlap=12), tile=12, overlap=12)  # the engine's own settings: refused
    auto = _with_tiling(plain, Tiling(min_overlap=40), tile="auto", overlap=4, memory_budget=1)
    assert min(auto.tile_for(300, 300)) > 40, "auto tiles stay larger than the overlap the model needs"


def test_auto_tiles_are_sized_for_the_padded_image(nearest_path):
    """``auto`` plans the image with its pre-pad: a budget the plain image fits whole is too small once padded."""
    plain = Upscaler.from_file(nearest_path, backend="onnxruntime", tile="auto", overlap=8)
    per_px = plain.backend.working_bytes_per_output_pixel
    budget = tile_memory(100, 100, 100, 4, per_px) + 1
    fits = Upscaler(plain.backend, plain.contract, tile="auto", overlap=8, memory_budget=budget)
    padded = _with_tiling(plain, Tiling(pre_pad=10), tile="auto", overlap=8, memory_budget=budget)
    assert fits.tile_for(100, 100) == (0, 0)
    assert padded.tile_for(100, 100) == choose_tiles(120, 120, 4, 8, budget, per_px) != (0, 0)


class OomOnLargeTiles:
    """Nearest x4 that runs out of memory on windows larger than ``limit`` pixels a side."""

    name, precision, input_name, input_shape = "oom", "f32", "lr", ["n", "h", "w", 3]
    metadata: dict[str, str] = {}
    working_bytes_per_output_pixel = 1024
    cache_window_pixels: int | None = None

    def __init__(self, limit: int):
        self.limit, self.sides = limit, list[int]()

    def run(self, batch):
        self.sides.append(batch.shape[1])
        if max(batch.shape[1:3]) > self.limit:
            raise OutOfMemory("too large")
        return np.repeat(np.repeat(batch, 4, axis=1), 4, axis=2)


def test_a_tile_split_after_out_of_memory_gets_no_border_of_its_own(rng):
    """The window that ran out of memory is the padded image (72 pixels); its halves are planned inside it (2 x 2
    windows of 40) with no border of their own (which would make 3 x 3 of 34): the pre-pad is the image's only."""
    img = rng.integers(0, 256, (60, 60, 3), dtype=np.uint8)
    backend = OomOnLargeTiles(limit=50)
    up = Upscaler(backend, ModelContract(scale=4, tiling=Tiling(pre_pad=6)), tile=0, overlap=4)
    np.testing.assert_array_equal(up.upscale(img), nearest(img))
    assert up.oom_splits == 1 and backend.sides[0] == 72
    assert backend.sides[1:] == [axis_windows(72, 36, 4)[1]] * 4 == [40] * 4


@pytest.mark.parametrize("height,width,tile,overlap", [(97, 130, 40, 8), (64, 300, 50, 8), (33, 40, 16, 8),
                                                       (128, 128, 32, 0), (20, 90, 8, 7)])
def test_blending_tiles_in_place_is_their_weighted_sum(rng, height, width, tile, overlap):
    """Tiles that disagree (as a real network's do in the overlaps): ``blend_into`` over a plan, in the engine's
    order, gives sum(weight * tile) at every pixel, although it copies where a tile's weight is 1 instead of
    multiplying and adding, and writes no weight sum."""
    s = 2
    plan = TilePlan.make(height, width, tile, overlap)
    canvas = np.zeros((height * s, width * s, 3), np.float32)
    expected = np.zeros(canvas.shape, np.float64)
    for row in plan.rows:
        wy = axis_weights(row, height, plan.r_rows, s, row.window[0] * s, row.window[1] * s)
        for col in plan.cols:
            wx = axis_weights(col, width, plan.r_cols, s, col.window[0] * s, col.window[1] * s)
            out = rng.uniform(0, 255, (len(wy), len(wx), 3)).astype(np.float32)
            ys, xs = slice(row.window[0] * s, row.window[1] * s), slice(col.window[0] * s, col.window[1] * s)
            expected[ys, xs] += out * wy[:, None, None] * wx[None, :, None]
            blend_into(canvas[ys, xs], out, wy, wx)
    np.testing.assert_allclose(canvas, expected, atol=1e-3)
