"""Any output size over real HTTP, Redis and a worker running the tiny x4 model: a fractional scale, a width,
a height, a box or a longer side gives exactly that size; what cannot be made is a 422 naming the field."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from tests.utils.service import image_bytes, wait_for, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def submit(client: httpx.Client, data: bytes, name: str = "cat.png", **fields: object) -> httpx.Response:
    return client.post("/v1/jobs", files={"file": (name, data, "application/octet-stream")},
                       data={k: str(v) for k, v in fields.items()})


@pytest.mark.parametrize(("fields", "field"), [
    ({"scale": "0.5"}, "scale"), ({"scale": "9"}, "scale"), ({"scale": "abc"}, "scale"), ({"scale": "nan"}, "scale"),
    ({"scale": "2", "width": "100"}, "scale"), ({"max_side": "100", "width": "100"}, "max_side"),
    ({"max_side": "100", "height": "100"}, "max_side"), ({"width": "0"}, "width"), ({"height": "-4"}, "height"),
    ({"max_side": "1.5"}, "max_side"), ({"width": "big"}, "width"),
    ({"width": "10"}, "width=10"),  # a scale of 0.5 for this 20x10 image: shrinking is not upscaling
    ({"width": "200"}, "width=200"),  # a scale of 10
    ({"height": "90"}, "height=90"),  # 9
    ({"width": "100", "height": "5"}, "width=100, height=5"),  # the box fits 0.5x
])
def test_a_size_that_cannot_be_made_is_422_naming_the_field(client, fields, field):
    response = submit(client, image_bytes(20, 10), **fields)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_parameter" and error["message"].startswith(field), error


@pytest.mark.parametrize(("fields", "size", "filename", "ran"), [
    ({"scale": "2.5"}, (50, 25), "cat_x2.5.png", ("nearest", 4)),
    ({"scale": "1.5"}, (30, 15), "cat_x1.5.png", ("srresnet_x2", 2)),  # the shipped native x2 reaches 1.5
    ({"width": "130"}, (130, 65), "cat_130w.png", ("nearest", 4)),
    ({"height": "70"}, (140, 70), "cat_70h.png", ("nearest", 4)),
    ({"width": "100", "height": "100"}, (100, 50), "cat_100x100.png", ("nearest", 4)),
    ({"max_side": "150"}, (150, 75), "cat_max150.png", ("nearest", 4)),
])
def test_the_result_has_exactly_the_asked_size_and_the_record_says_how(client, fields, size, filename, ran):
    done = wait_for(client, submit(client, image_bytes(20, 10), **fields).headers["location"])
    assert done["status"] == "succeeded", done
    assert (done["output"]["width"], done["output"]["height"]) == size
    assert Image.open(io.BytesIO(client.get(done["links"]["result"]).content)).size == size
    assert done["resample"] == {"model_scale": ran[1], "size": list(size), "filter": "lanczos"}
    assert (done["model"]["name"], done["model"]["scale"]) == ran
    assert done["output"]["filename"] == filename
    assert {k: v for k, v in done["params"].items() if k in fields} == {
        k: float(v) if k == "scale" else int(v) for k, v in fields.items()}


def test_the_model_scale_or_its_size_has_no_resample(client):
    for fields in ({}, {"scale": "4"}, {"width": "80"}):
        done = wait_for(client, submit(client, image_bytes(20, 10), **fields).headers["location"])
        assert done["status"] == "succeeded" and done["resample"] is None, done
        assert (done["output"]["width"], done["output"]["height"]) == (80, 40)


def test_a_batch_sizes_each_file_and_fails_the_one_that_cannot_reach_it(client):
    """The width is the batch's; the scale it needs is each file's: a file it would shrink fails alone."""
    parts = [("file", ("small.png", image_bytes(20, 10), "image/png")),
             ("file", ("large.png", image_bytes(300, 150), "image/png")), ("width", (None, "100"))]
    response = client.post("/v1/batches", files=parts)
    assert response.status_code == 202, response.text
    batch = response.json()
    small, large = batch["jobs"]
    assert large["status"] == "failed" and large["error"]["code"] == "invalid_parameter"
    assert large["error"]["message"].startswith("width=100: from this 300x150 image")

    def completed():
        body = client.get(batch["links"]["self"]).json()
        return body if body["status"] == "completed" else None

    done = wait_until(completed, what="the batch to complete")
    small = done["jobs"][0]
    assert small["status"] == "succeeded" and (small["output"]["width"], small["output"]["height"]) == (100, 50)
    assert small["output"]["filename"] == "small_100w.png"
