"""The states of a job and every move between them, with who makes it: the one table.

Like Celery's ``celery/states.py`` or RQ's ``JobStatus``, every state is named
here, and :data:`TRANSITIONS` lists each move a job can make, who makes it (the
API, a worker, the reaper of ``core.recovery``) and through which
``core.jobs.JobStore`` method (each method runs one Lua script, so a move is
atomic). ``docs/lifecycles.md`` draws this table; a test fails when the two
disagree.

Terminal states never change again; the record expires ``job_ttl_s`` after it
was made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["queued", "running", "succeeded", "failed", "canceled", "aborted"]
STATUSES: tuple[Status, ...] = ("queued", "running", "succeeded", "failed", "canceled", "aborted")
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "canceled", "aborted"})
"""``aborted``: the job's deadline passed before it started, so it never ran (``canceled``: stopped by a
cancel, or by its deadline while running)."""

NEW = "[*]"
"""Before the record exists (the diagram's start)."""

Actor = Literal["api", "worker", "reaper"]


@dataclass(frozen=True)
class Transition:
    """One move: ``source`` -> ``target``, made by ``actors`` through the ``JobStore`` methods ``via``."""

    source: str
    target: Status
    actors: tuple[Actor, ...]
    via: tuple[str, ...]
    why: str


TRANSITIONS: tuple[Transition, ...] = (
    Transition(NEW, "queued", ("api",), ("create",), "admitted: stored and queued (api.admission)"),
    Transition(NEW, "failed", ("api",), ("create_failed",), "a file of a batch that is not an image we read"),
    Transition("queued", "running", ("worker",), ("start",), "a worker claims the job's message"),
    Transition("queued", "canceled", ("api",), ("cancel",), "DELETE /v1/jobs/{id} while it waits"),
    Transition("queued", "aborted", ("worker", "reaper"), ("start", "abort_overdue"),
               "its deadline passed before a worker started it"),
    Transition("queued", "failed", ("worker",), ("start", "finish"),
               "its attempts are used up, or its task failed before it started (time limit, Redis gone)"),
    Transition("running", "running", ("worker",), ("start",), "a redelivery of its message: one more attempt"),
    Transition("running", "succeeded", ("worker",), ("finish",), "the result is stored"),
    Transition("running", "failed", ("worker", "reaper"), ("finish", "start", "requeue_lost"),
               "an error; or its attempts are used up (its workers died)"),
    Transition("running", "canceled", ("worker", "reaper"), ("finish", "start", "requeue_lost"),
               "a cancel was requested (DELETE sets the flag; the run stops before its next tile), or its "
               "deadline passed while it ran"),
    Transition("running", "queued", ("reaper",), ("requeue_lost",),
               "its run sent no heartbeat for worker_lost_s: queued again with the next generation"),
)

