"""The size of a result: what a request asks for, the size that gives for one image, and the scale it needs.

A request asks for one of:

- nothing: the model's own scale;
- ``scale``: any factor from 1 to 8, fractional too (2.5): the result is ``round(w * scale) x round(h * scale)``;
- ``width`` and/or ``height``: the result is that wide (or high), the other side from the aspect ratio
  (``width=1920`` on 640x480 gives 1920x1440); both given: the largest size that fits inside that box with the
  aspect kept (one side equals the box's, the other is at most the box's);
- ``max_side``: the longer side becomes ``max_side``, the aspect kept.

Sizes are rounded to the nearest pixel, halves up. The scale a size needs (the result over the input, on the side
the request fixes) must lie in 1..8, like ``scale``: a request to shrink an image, or to enlarge it more than
8 times, is refused (:class:`~model.errors.InvalidParameter`, naming the field). Nothing here reads pixels: the
API checks a request against the upload's header, ``core.render`` against the decoded image (the same sizes,
as displayed after the EXIF orientation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from model.errors import InvalidParameter

MIN_SCALE = 1
MAX_SCALE = 8
SIZE_FIELDS = ("width", "height", "max_side")


def _half_up(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))


def _exact(scale: float) -> Fraction:
    """``scale`` as the decimal it was written as (2.5 -> 5/2, 1.1 -> 11/10, not the binary float's value)."""
    return Fraction(repr(float(scale)))


@dataclass(frozen=True)
class OutputSize:
    """What a request asks of the result's size: ``scale`` or ``width``/``height``/``max_side``, or nothing.

    Made through :meth:`checked` (or :meth:`from_params`), which refuses a bad combination.
    """

    scale: float | None = None
    width: int | None = None
    height: int | None = None
    max_side: int | None = None

    @classmethod
    def checked(cls, *, scale: float | None = None, width: int | None = None, height: int | None = None,
                max_side: int | None = None) -> OutputSize:
        """The request, or ``InvalidParameter`` naming the field: a scale outside 1..8 (or not a finite number),
        a size that is not a positive integer, ``scale`` with a size, ``max_side`` with ``width``/``height``."""
        if scale is not None and (not math.isfinite(scale) or not MIN_SCALE <= scale <= MAX_SCALE):
            raise InvalidParameter(f"scale: must be a number from {MIN_SCALE} to {MAX_SCALE}, got {scale:g}")
        sizes = {"width": width, "height": height, "max_side": max_side}
        for name, value in sizes.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidParameter(f"{name}: must be a whole number of pixels, 1 or more, got {value}")
        given = [name for name, value in sizes.items() if value is not None]
        if scale is not None and given:
            raise InvalidParameter(f"scale: give a scale or a size ({', '.join(given)}), not both")
        if max_side is not None and (width is not None or height is not None):
            raise InvalidParameter("max_side: give max_side alone, or width and/or height, not both")
        return cls(float(scale) if scale is not None else None, width, height, max_side)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> OutputSize:
        """The size a job record's ``params`` ask for (``scale``, ``width``, ``height``, ``max_side``)."""
        def num(name: str) -> Any:
            value = params.get(name)
            return None if value in (None, "") else value

        scale = num("scale")
        return cls.checked(scale=float(scale) if scale is not None else None,
                           **{name: int(num(name)) if num(name) is not None else None for name in SIZE_FIELDS})

    @property
    def fixed_by_size(self) -> bool:
        """Whether a width, height or longer side is asked for (not a scale)."""
        return any(v is not None for v in (self.width, self.height, self.max_side))

    def params(self) -> dict[str, float | int]:
        """What a job record's ``params`` keep of the request (only what was asked)."""
        fields = {"scale": self.scale, "width": self.width, "height": self.height, "max_side": self.max_side}
        return {k: (int(v) if k == "scale" and float(v).is_integer() else v) for k, v in fields.items()
                if v is not None}

    def _ratio(self, width: int, height: int) -> Fraction | None:
        """The exact factor the request puts on the side it fixes (None: the model's own)."""
        if self.scale is not None:
            return _exact(self.scale)
        if self.max_side is not None:
            return Fraction(self.max_side, max(width, height))
        ratios = [Fraction(self.width, width) if self.width is not None else None,
                  Fraction(self.height, height) if self.height is not None else None]
        known = [r for r in ratios if r is not None]
        return min(known) if known else None

    def needed_scale(self, width: int, height: int) -> float | None:
        """The scale the result of a ``width`` x ``height`` image needs (None: the model's own); raises
        ``InvalidParameter`` naming the field when it is outside 1..8."""
        ratio = self._ratio(width, height)
        if ratio is None:
            return None
        if not MIN_SCALE <= ratio <= MAX_SCALE:
            raise InvalidParameter(f"{self._asked()}: from this {width}x{height} image that is a scale of "
                                   f"{float(ratio):.3g}; the scale must be from {MIN_SCALE} to {MAX_SCALE}")
        return float(ratio)

    def result_size(self, width: int, height: int, model_scale: int) -> tuple[int, int]:
        """The result's width and height for a ``width`` x ``height`` image (``model_scale``: when nothing is
        asked); raises ``InvalidParameter`` as :meth:`needed_scale` does."""
        self.needed_scale(width, height)
        ratio = self._ratio(width, height)
        if ratio is None:
            return width * model_scale, height * model_scale
        if self.scale is None:  # the fixed side is exactly as asked; the other follows the aspect
            if self.max_side is not None:
                return (self.max_side, _half_up(height * ratio)) if width >= height else \
                    (_half_up(width * ratio), self.max_side)
            if self.width is not None and ratio == Fraction(self.width, width):
                return self.width, _half_up(height * ratio)
            return _half_up(width * ratio), int(self.height or 0)
        return _half_up(width * ratio), _half_up(height * ratio)

    def _asked(self) -> str:
        """The asked size as its fields say it (``width=1920``, ``width=1920, height=1080``, ``max_side=800``)."""
        fields = {"scale": self.scale, "width": self.width, "height": self.height, "max_side": self.max_side}
        return ", ".join(f"{k}={v:g}" for k, v in fields.items() if v is not None)

    def label(self, model_scale: int | None) -> str:
        """How the result's file name says its size: ``x2.5``, ``1920w``, ``1080h``, ``1920x1080`` (a box),
        ``max1920``; nothing asked: ``x<model_scale>`` (``sr`` when unknown)."""
        if self.max_side is not None:
            return f"max{self.max_side}"
        if self.width is not None and self.height is not None:
            return f"{self.width}x{self.height}"
        if self.width is not None:
            return f"{self.width}w"
        if self.height is not None:
            return f"{self.height}h"
        scale = self.scale if self.scale is not None else model_scale
        return f"x{scale:g}" if scale else "sr"
