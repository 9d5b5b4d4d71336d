"""`Prefer: wait`, `Cancel-After` and `deadline` parsing (api.options), and signed links (core.links)."""

from __future__ import annotations

from typing import Any

import pytest

from api.options import parse_deadline, parse_duration, parse_prefer_wait
from core.links import LinkSigner

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("header", "expected"), [
    (None, None), ("", None), ("respond-async", None), ("wait=10", 10.0), ("respond-async, wait=5", 5.0),
    ("wait=2.5; handling=lenient", 2.5), ('wait="7"', 7.0), ("wait=600", 60.0), ("WAIT = 3", 3.0), ("wait=x", None),
])
def test_prefer_wait(header, expected):
    assert parse_prefer_wait(header, limit=60) == expected


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("1.5m", 90), ("2h", 7200), ("500ms", 0.5),
                                               (" 5 M ", 300)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["soon", "-5s", "5 minutes", "", "1e3"])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_deadlines():
    now = 1_800_000_000.0
    assert parse_deadline(cancel_after="90s", deadline=None, now=now, longest_s=3600) == now + 90
    assert parse_deadline(cancel_after=None, deadline="2m", now=now, longest_s=3600) == now + 120
    assert parse_deadline(cancel_after=None, deadline="2027-01-15T08:00:10Z", now=now, longest_s=3600) == now + 10
    assert parse_deadline(cancel_after=None, deadline="2027-01-15T10:00:10+02:00", now=now,
                          longest_s=3600) == now + 10
    assert parse_deadline(cancel_after=None, deadline=None, now=now, longest_s=3600) is None
    cases: list[tuple[dict[str, Any], str]] = [
        ({"cancel_after": "5s", "deadline": "5s"}, "not both"),
        ({"cancel_after": "2027-01-15T08:00:10Z", "deadline": None}, "duration"),  # the header takes durations
        ({"cancel_after": None, "deadline": "2027-01-15T08:00:10"}, "time zone"),
        ({"cancel_after": None, "deadline": "2020-01-01T00:00:00Z"}, "already passed"),
        ({"cancel_after": "0s", "deadline": None}, "already passed"),
        ({"cancel_after": "2h", "deadline": None}, "lifetime"),
        ({"cancel_after": None, "deadline": "tomorrow"}, "neither"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            parse_deadline(now=now, longest_s=3600, **kwargs)


def test_link_signatures():
    signer = LinkSigner(b"secret", ttl_s=60)
    url, expires = signer.sign("job-1", now=1000.0, base="https://sr.example.com/")
    assert url == f"https://sr.example.com/v1/links/job-1?expires=1060&signature={signer.signature('job-1', 1060)}"
    assert expires == 1060
    good = signer.signature("job-1", 1060)
    assert signer.check("job-1", 1060, good, now=1059.9) == "ok"
    assert signer.check("job-1", 1060, good.upper(), now=1000) == "ok"
    assert signer.check("job-1", 1060, good, now=1060) == "expired"
    assert signer.check("job-2", 1060, good, now=1000) == "invalid"
    assert signer.check("job-1", 1061, good, now=1000) == "invalid"
    assert LinkSigner(b"other", ttl_s=60).check("job-1", 1060, good, now=1000) == "invalid"
