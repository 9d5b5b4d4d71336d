import threading

import numpy as np
import pytest

from bench.tiny_models import make_nearest_model
from model.contract import ModelContract
from model.engine import Upscaler
from model.errors import Canceled, InferenceError, InvalidParameter, ModelError

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


class BrokenBackend:
    name, precision, input_name, input_shape = "broken", "f32", "lr", ["n", "h", "w", 3]
    metadata: dict[str, str] = {}
    working_bytes_per_output_pixel = 1024

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
