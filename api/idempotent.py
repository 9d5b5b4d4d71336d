"""``Idempotency-Key`` on the POST routes: claim the key for a new record, or give back the earlier one."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from api.errors import ApiError
from core.idempotency import PENDING_S, IdempotencyKeys

T = TypeVar("T")


def claim_or_replay(keys: IdempotencyKeys, owner: str, key: str, *, fingerprint: str, kind: str, new_id: str,
                    lookup: Callable[[str], T | None]) -> T | None:
    """None: ``new_id`` may be made (release the key if making it fails); else the earlier record to answer.

    Raises 409 ``idempotency_conflict`` for the same key with another request, and 409
    ``idempotency_in_progress`` while the first request is still being handled.
    """
    claim = keys.claim(owner, key, fingerprint=fingerprint, kind=kind, new_id=new_id)
    if claim.outcome == "conflict":
        raise ApiError(409, "idempotency_conflict", "this Idempotency-Key was used for another request "
                       f"({kind} {claim.id}); use a new key for a new upload")
    if claim.outcome == "replay":
        earlier = lookup(claim.id)
        if earlier is not None:
            return earlier
        if claim.age_s < PENDING_S:
            raise ApiError(409, "idempotency_in_progress", "a request with this Idempotency-Key is still being "
                           "handled; retry in a moment", headers={"Retry-After": "1"})
        keys.take_over(owner, key, fingerprint=fingerprint, kind=kind, new_id=new_id)  # its record expired
    return None
