"""``core.throughput.TimeLeft``: a run's seconds left from its own pace, or its prior before the first tile."""

from __future__ import annotations

import pytest

from core import throughput
from core.throughput import TimeLeft

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_tiles_left_at_the_pace_so_far_and_the_prior_before_any(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(throughput.time, "monotonic", clock)
    left = TimeLeft(prior_s=40.0)
    clock.now += 10
    assert left.at(0, 8) == 30.0  # nothing measured yet: the prior less the time spent
    clock.now += 10
    assert left.at(2, 8) == 60.0  # 2 tiles in 20 s: 6 more take 60 s
    clock.now += 20
    assert left.at(4, 8) == 40.0  # at 50%: as long again as it took
    assert left.at(8, 8) == 0.0
    assert TimeLeft().at(0, 8) is None  # neither tiles nor a recorded speed: no guess


def test_the_expected_encode_time_is_added(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(throughput.time, "monotonic", clock)
    left = TimeLeft(prior_s=8.0, tail_s=5.0)
    assert left.at(0, 4) == 13.0
    clock.now += 4
    assert left.at(2, 4) == 9.0  # 4 s of tiles left, then the encode
    assert left.at(4, 4) == 5.0
