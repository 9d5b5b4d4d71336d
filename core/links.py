"""Shareable result links: ``/v1/links/{id}?expires=T&signature=S``, like a presigned object URL.

``S`` is HMAC-SHA256 (hex) over ``"{id}.{T}"`` with the deployment's link secret; anyone holding the
link may download the result until ``T`` (unix seconds), without an API key. The secret is
``link_secret`` when set, else a random one made once and kept in Redis, so every API replica and
worker signs and checks with the same key.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from dataclasses import dataclass
from typing import Literal

import redis

from core.keyspace import LINK_SECRET
from core.settings import Settings

LINK_PATH = "/v1/links/{job_id}"


def link_secret(settings: Settings, client: redis.Redis) -> bytes:
    """The configured secret, else the one kept in Redis (made on first use; SET NX, so one wins)."""
    if settings.link_secret is not None:
        return settings.link_secret.get_secret_value().encode()
    client.set(LINK_SECRET, secrets.token_hex(32), nx=True)
    return str(client.get(LINK_SECRET)).encode()


@dataclass(frozen=True)
class LinkSigner:
    secret: bytes
    ttl_s: int

    def signature(self, job_id: str, expires: int) -> str:
        return hmac.new(self.secret, f"{job_id}.{expires}".encode(), hashlib.sha256).hexdigest()

    def sign(self, job_id: str, *, now: float | None = None, base: str = "") -> tuple[str, int]:
        """``(url, expires)``: a link to the job's result valid for ``ttl_s`` from ``now``."""
        expires = math.ceil((time.time() if now is None else now) + self.ttl_s)
        path = LINK_PATH.format(job_id=job_id)
        return f"{base.rstrip('/')}{path}?expires={expires}&signature={self.signature(job_id, expires)}", expires

    def check(self, job_id: str, expires: int, signature: str,
              now: float | None = None) -> Literal["ok", "invalid", "expired"]:
        """``invalid`` for a signature that does not match (a changed id or expiry too), then ``expired``."""
        given = signature.lower().encode("utf-8", "replace")  # bytes: any text is a wrong signature, not an error
        if not hmac.compare_digest(self.signature(job_id, expires).encode(), given):
            return "invalid"
        if (time.time() if now is None else now) >= expires:
            return "expired"
        return "ok"


class DeploymentLinks:
    """The deployment's :class:`LinkSigner`, made on first use: a secret kept in Redis is read then, not
    when the process starts, so the API starts (and answers ``/readyz``) while Redis is away."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings, self.client = settings, client
        self._signer: LinkSigner | None = None

    @property
    def signer(self) -> LinkSigner:
        if self._signer is None:  # two threads at once read the same secret (SET NX): no lock needed
            self._signer = LinkSigner(link_secret(self.settings, self.client), self.settings.link_ttl_s)
        return self._signer

    def sign(self, job_id: str, *, now: float | None = None, base: str = "") -> tuple[str, int]:
        return self.signer.sign(job_id, now=now, base=base)

    def check(self, job_id: str, expires: int, signature: str,
              now: float | None = None) -> Literal["ok", "invalid", "expired"]:
        return self.signer.check(job_id, expires, signature, now)
