"""Delete the files of expired jobs: Redis forgets a record by its TTL, this forgets its files
(a folder, or objects in the store)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from core.jobs import JobStore
from core.storage import Storage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepReport:
    removed_jobs: int
    removed_incoming: int
    pruned_ids: int


def sweep_expired(store: JobStore, storage: Storage, *, grace_s: float) -> SweepReport:
    """Remove job folders that have no record any more, and abandoned partial uploads.

    ``grace_s`` protects folders younger than that: a folder is made a moment
    before its record, and an upload is received before it becomes a job.
    """
    cutoff = time.time() - grace_s
    candidates = [job_id for job_id, mtime in storage.job_dirs() if mtime <= cutoff]
    removed = 0
    for job_id, found in store.existing(candidates).items():
        if not found:
            storage.remove(job_id)
            removed += 1
    incoming = storage.stale_incoming(grace_s)
    for path in incoming:
        path.unlink(missing_ok=True)
    report = SweepReport(removed, len(incoming), store.prune_state_sets())
    if removed or incoming:
        log.info("swept %d expired job folder(s), %d stale upload(s)", removed, len(incoming))
    return report
