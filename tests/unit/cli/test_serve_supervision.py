"""`srgan serve`'s worker restart budget: backoff, a window that forgets old restarts, never given up."""

from __future__ import annotations

import pytest

from cli.serve import WorkerPool, WorkerProcess

pytestmark = pytest.mark.unit


def supervised(budget: int = 5, window_s: float = 600.0, backoff_max_s: float = 30.0) -> WorkerProcess:
    return WorkerProcess({}, "info", 0, budget=budget, window_s=window_s, backoff_max_s=backoff_max_s)


def crash_at(worker: WorkerProcess, now: float) -> tuple[float, bool]:
    """A death at ``now``, and the restart the supervisor makes after the delay it chose."""
    delay, exhausted = worker.next_delay(now)
    worker.restart_times.append(now + delay)
    return delay, exhausted


def test_six_crashes_spaced_over_fifteen_minutes_are_all_restarted():
    worker = supervised()  # 5 restarts in 10 minutes
    outcomes = [crash_at(worker, minute * 60.0) for minute in (0, 3, 6, 9, 12, 15)]
    assert not any(exhausted for _, exhausted in outcomes), outcomes
    assert all(delay <= 30.0 for delay, _ in outcomes)


def test_backoff_doubles_then_the_budget_waits_for_the_window_and_goes_on():
    worker = supervised(budget=3, window_s=100.0, backoff_max_s=3.0)
    assert [crash_at(worker, t)[0] for t in (0.0, 10.0, 20.0)] == [1.0, 2.0, 3.0]  # capped at 3
    delay, exhausted = worker.next_delay(30.0)  # a 4th death within the window
    assert exhausted and delay == pytest.approx(1.0 + 100.0 - 30.0)  # until the first restart leaves it
    delay, exhausted = worker.next_delay(101.0 + 1.0)  # later: the first restart has left the window
    assert not exhausted and delay == 3.0


def test_the_pool_refuses_jobs_only_while_every_worker_waits_out_its_budget():
    one, two = supervised(), supervised()
    pool = WorkerPool([one, two])
    assert pool.unavailable() is None
    one.down_until, one.exhausted = 1e12, True
    assert pool.unavailable() is None  # the other still runs jobs
    two.down_until, two.exhausted = 1e12, True
    down = pool.unavailable()
    assert down is not None and "no worker runs" in down[0] and down[1] > 0
    assert "0 of 2" in pool.describe()
