"""``core.sizing``: the result's size for a scale, a width, a height, a box or a longer side, and what is refused."""

from __future__ import annotations

from typing import Any

import pytest

from core.sizing import OutputSize
from model.errors import InvalidParameter

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("asked", "image", "expected"), [
    ({}, (320, 240), (1280, 960)),  # nothing asked: the model's scale (4)
    ({"scale": 2.5}, (320, 240), (800, 600)),
    ({"scale": 2.5}, (33, 21), (83, 53)),  # 82.5 and 52.5: halves up
    ({"scale": 1.1}, (5, 15), (6, 17)),  # 5.5 and 16.5 as written, not the binary float's 5.500000000000001
    ({"scale": 1}, (7, 3), (7, 3)),
    ({"scale": 8}, (7, 3), (56, 24)),
    ({"width": 1920}, (320, 240), (1920, 1440)),
    ({"width": 1000}, (333, 250), (1000, 751)),  # 250 * 1000 / 333 = 750.75
    ({"height": 1080}, (400, 300), (1440, 1080)),
    ({"width": 1920, "height": 1080}, (400, 300), (1440, 1080)),  # the height binds: fit inside the box
    ({"width": 1000, "height": 1080}, (400, 300), (1000, 750)),  # the width binds
    ({"width": 800, "height": 600}, (400, 300), (800, 600)),  # the same aspect: both exact
    ({"max_side": 1600}, (400, 300), (1600, 1200)),
    ({"max_side": 1600}, (300, 400), (1200, 1600)),
    ({"max_side": 900}, (300, 300), (900, 900)),
])
def test_result_size(asked, image, expected):
    assert OutputSize.checked(**asked).result_size(image[0], image[1], 4) == expected


@pytest.mark.parametrize(("asked", "image", "needed"), [
    ({}, (320, 240), None),
    ({"scale": 2.5}, (10, 10), 2.5),
    ({"width": 1920}, (320, 240), 6.0),
    ({"height": 1080}, (400, 300), 3.6),
    ({"width": 1920, "height": 1080}, (400, 300), 3.6),
    ({"max_side": 1600}, (300, 400), 4.0),
])
def test_needed_scale(asked, image, needed):
    assert OutputSize.checked(**asked).needed_scale(*image) == needed


@pytest.mark.parametrize(("asked", "image", "field"), [
    ({"width": 100}, (320, 240), "width=100"),  # a scale of 0.3125: shrinking is not upscaling
    ({"width": 2561}, (320, 240), "width=2561"),  # just over 8
    ({"height": 100}, (320, 240), "height=100"),
    ({"max_side": 3000}, (320, 240), "max_side=3000"),
    ({"width": 1000, "height": 100}, (320, 240), "width=1000, height=100"),
])
def test_a_size_needing_a_scale_outside_1_to_8_is_refused_naming_it(asked, image, field):
    size = OutputSize.checked(**asked)
    with pytest.raises(InvalidParameter, match=f"^{field}: .* scale of .*from 1 to 8"):
        size.result_size(image[0], image[1], 4)


def test_the_limits_themselves_are_allowed():
    assert OutputSize.checked(width=2560).result_size(320, 240, 4) == (2560, 1920)
    assert OutputSize.checked(width=320).result_size(320, 240, 4) == (320, 240)


@pytest.mark.parametrize(("asked", "field"), [
    ({"scale": 0.5}, "scale"), ({"scale": 8.01}, "scale"), ({"scale": float("nan")}, "scale"),
    ({"scale": float("inf")}, "scale"), ({"width": 0}, "width"), ({"height": -3}, "height"),
    ({"max_side": 0}, "max_side"), ({"scale": 2, "width": 100}, "scale"), ({"scale": 2, "max_side": 100}, "scale"),
    ({"max_side": 100, "width": 100}, "max_side"), ({"max_side": 100, "height": 100}, "max_side"),
])
def test_bad_requests_name_their_field(asked, field):
    with pytest.raises(InvalidParameter, match=f"^{field}: "):
        OutputSize.checked(**asked)


def test_params_round_trip_and_labels():
    cases: list[tuple[dict[str, Any], str]] = [
        ({"scale": 2.5}, "x2.5"), ({"scale": 2}, "x2"), ({"width": 1920}, "1920w"), ({"height": 1080}, "1080h"),
        ({"width": 1920, "height": 1080}, "1920x1080"), ({"max_side": 1600}, "max1600"), ({}, "x4")]
    for asked, label in cases:
        size = OutputSize.checked(**asked)
        assert size.params() == asked
        assert OutputSize.from_params({**size.params(), "model": "m", "format": None}) == size
        assert size.label(4) == label
    assert OutputSize().label(None) == "sr"
    assert OutputSize.from_params({"scale": 4}).params() == {"scale": 4}  # a record from before: an int scale
