"""Signed result links: a changed or foreign signature is ``invalid``, never an error."""

from __future__ import annotations

import pytest

from core.links import LinkSigner

pytestmark = pytest.mark.unit

JOB = "15b2c4e3-56c2-4f24-8d32-b40119fae5d4"


def test_a_link_checks_until_it_expires():
    signer = LinkSigner(b"secret", ttl_s=60)
    url, expires = signer.sign(JOB, now=1000.0)
    signature = url.rsplit("signature=", 1)[1]
    assert signer.check(JOB, expires, signature, now=1001.0) == "ok"
    assert signer.check(JOB, expires, signature.upper(), now=1001.0) == "ok"
    assert signer.check(JOB, expires, signature, now=expires) == "expired"
    assert signer.check(JOB, expires + 1, signature, now=1001.0) == "invalid"


@pytest.mark.parametrize("signature", ["", "00" * 32, "\U0003c899\U0010a21d\xf2\x80Y\xa8", "é" * 64, "\0"])
def test_any_other_text_is_an_invalid_signature(signature):
    assert LinkSigner(b"secret", ttl_s=60).check(JOB, 2000, signature, now=1000.0) == "invalid"
