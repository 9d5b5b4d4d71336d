"""``Idempotency-Key`` on ``POST /v1/jobs``: a retried request gets the job (or batch) it made the first time.

A key is remembered per caller (the owner the API gives each request) for ``idempotency_ttl_s``
under ``srgan:idempotency:{owner}:{sha256(key)}`` as ``{"kind", "id", "fingerprint", "at"}``; the
fingerprint is a SHA-256 over the uploaded bytes and the form fields, so the same key with another
upload is told apart (a conflict) from a retry.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import redis

from core.keyspace import idempotency_key

MAX_KEY_LENGTH = 255
PENDING_S = 30.0
"""A claim whose job does not exist yet is a request still in flight for this long; after it, a
claim left behind by a request that failed half-way is taken over."""


def fingerprint(files: Iterable[Path | bytes], fields: Mapping[str, str]) -> str:
    """SHA-256 over the uploaded files (or fetched URL's bytes) in order, and the form fields sorted."""
    digest = hashlib.sha256()
    for item in files:
        part = hashlib.sha256()
        if isinstance(item, bytes):
            part.update(item)
        else:
            with open(item, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    part.update(block)
        digest.update(part.digest())
    digest.update(json.dumps(sorted(fields.items())).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Claim:
    outcome: Literal["new", "replay", "conflict"]
    kind: str = "job"
    id: str = ""
    age_s: float = 0.0


class IdempotencyKeys:
    def __init__(self, client: redis.Redis, *, ttl_s: int) -> None:
        self.redis, self.ttl_s = client, ttl_s

    @staticmethod
    def redis_key(owner: str, key: str) -> str:
        return idempotency_key(owner, hashlib.sha256(key.encode()).hexdigest())

    def claim(self, owner: str, key: str, *, fingerprint: str, kind: str, new_id: str) -> Claim:
        """Take ``key`` for ``new_id`` (``new``), or say what it already names (``replay``/``conflict``)."""
        name = self.redis_key(owner, key)
        value = json.dumps({"kind": kind, "id": new_id, "fingerprint": fingerprint, "at": time.time()})
        if self.redis.set(name, value, nx=True, ex=self.ttl_s):
            return Claim("new", kind, new_id)
        raw = self.redis.get(name)
        if raw is None:  # expired between the two calls
            return self.claim(owner, key, fingerprint=fingerprint, kind=kind, new_id=new_id)
        held = json.loads(raw)
        age = time.time() - float(held.get("at", 0))
        if held["fingerprint"] != fingerprint or held.get("kind") != kind:
            return Claim("conflict", held.get("kind", "job"), held["id"], age)
        return Claim("replay", held["kind"], held["id"], age)

    def take_over(self, owner: str, key: str, *, fingerprint: str, kind: str, new_id: str) -> None:
        """Point ``key`` at ``new_id`` (its old target is gone: expired, or never made)."""
        value = json.dumps({"kind": kind, "id": new_id, "fingerprint": fingerprint, "at": time.time()})
        self.redis.set(self.redis_key(owner, key), value, ex=self.ttl_s)

    def release(self, owner: str, key: str, new_id: str) -> None:
        """Forget ``key`` if it still names ``new_id`` (its request failed before the job existed)."""
        name = self.redis_key(owner, key)
        raw = self.redis.get(name)
        if raw is not None and json.loads(raw).get("id") == new_id:
            self.redis.delete(name)
