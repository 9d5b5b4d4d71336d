"""``srgan upscale``'s progress bar: tiles done, their rate and the time left."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.unit


def test_the_progress_bar_shows_the_rate_and_the_time_left(capsys):
    import time

    from cli.upscale import ProgressBar

    with ProgressBar("photo.jpg", True) as update:
        assert update is not None
        for done in (1, 2, 3):
            time.sleep(0.05)
            update(done, 12)
        shown = capsys.readouterr().err.rsplit("\r", 1)[-1]
    assert "3/12" in shown and "tile/s" in shown, shown
    elapsed, left = shown.split("[", 1)[1].split(",")[0].split("<")
    assert left.strip() not in ("", "?"), shown  # a time left, e.g. 00:00<00:01
