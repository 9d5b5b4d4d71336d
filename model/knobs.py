"""The two knobs of a job's network, ``detail`` and ``denoise``: values in 0..1, rounded to a step so that a
handful of networks (``model.interpolate``'s blends) serve every request. No third-party import: the API and the
catalog check a request's knobs without loading onnx."""

from __future__ import annotations

import math

from model.errors import InvalidParameter

DETAIL_STEP = 0.05
"""Detail and denoise values are rounded to this step, so a handful of networks serve every request."""


def round_detail(value: float) -> float:
    """``value`` (0..1) rounded to :data:`DETAIL_STEP`; anything else is an :class:`InvalidParameter`."""
    return _round_knob("detail", value)


def round_denoise(value: float) -> float:
    """A denoise strength (0..1) rounded to :data:`DETAIL_STEP`; anything else is an :class:`InvalidParameter`."""
    return _round_knob("denoise", value)


def _round_knob(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InvalidParameter(f"{name} must be a number between 0 and 1, got {value!r}") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidParameter(f"{name} must be between 0 and 1, got {value}")
    steps = round(value / DETAIL_STEP)
    return round(steps * DETAIL_STEP, 2)
