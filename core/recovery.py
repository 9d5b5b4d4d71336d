"""The reaper: jobs whose worker died, or whose message was lost, are queued again in seconds.

A running job's run sends a heartbeat every ``heartbeat_s`` (``worker.pipeline``; Redis
records it on the job as ``beat_at``). A pass of :class:`Reaper`:

1. queues again every running job whose run has been silent for over ``worker_lost_s`` (its
   process was killed, its worker's machine died, or Redis failed under it and the run gave
   the job up), with the job's next *generation*, and sends a message of that generation; a
   job whose attempts are used ends ``failed`` (``attempts_exhausted``), one whose cancel was
   requested ends ``canceled``;
2. sends again the message of every job queued for over ``message_lost_s`` whose message is in
   neither the broker's queue nor a worker's hands (Celery's unacknowledged messages): lost
   with a Redis that restarted without it, or removed by hand.

Both changes are one Lua script each (``core.jobs``), so two reapers, or a reaper and a worker
that was only slow, change a job once; the message that came before is ``superseded`` (a
worker that receives it does nothing), and a run that is given up can no longer write to the
job. Each requeue is followed by a start, which counts an attempt, so ``max_attempts`` bounds
them. The visibility timeout stays as the last resort: a dead worker's own message comes back
after it, and runs the job if nothing else did.

Every job worker (a thread of its main process, ``worker.lifecycle``) and the API run passes
every ``reaper_interval_s``; a lock in Redis lets one pass run per interval across them all.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import redis

from core.jobs import UPSCALE_TASK, JobStore
from core.keyspace import REAPER_LOCK
from core.settings import Settings

log = logging.getLogger(__name__)

SendTask = Callable[..., object]
"""``Celery.send_task``: how a message is sent (the API and the workers each have their own app)."""

UNACKED = "unacked"
"""kombu's Redis transport: the hash of messages that workers hold but have not acknowledged."""
PRIORITY_SEPARATOR = "\x06\x16"
"""kombu's Redis transport keeps a queue's messages of priority p > 0 in ``<queue>\\x06\\x16<p>``."""
PRIORITY_STEPS = (3, 6, 9)


def send_job(send_task: SendTask, queue: str, job_id: str, generation: int = 0) -> None:
    """Send the message that runs ``job_id`` (of ``generation``, counted up each time the job is queued again)."""
    kwargs = {"generation": generation} if generation else {}
    send_task(UPSCALE_TASK, args=[job_id], kwargs=kwargs, queue=queue, task_id=job_id, retry=True,
              retry_policy={"max_retries": 3, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 1.0})


def _task_id(message: object) -> str | None:
    if isinstance(message, dict):
        headers = message.get("headers") or {}
        if headers.get("task") == UPSCALE_TASK:
            return headers.get("id")
    return None


def broker_job_ids(client: redis.Redis, queue: str) -> set[str]:
    """Ids of the jobs that have a message in the broker: waiting in ``queue`` or held by a worker."""
    found: set[str] = set()
    lists = [queue, *(f"{queue}{PRIORITY_SEPARATOR}{p}" for p in PRIORITY_STEPS)]
    with client.pipeline(transaction=False) as pipe:
        for name in lists:
            pipe.lrange(name, 0, -1)
        pipe.hvals(UNACKED)
        *waiting, held = pipe.execute()
    raws: list[tuple[str, bool]] = [(raw, False) for chunk in waiting for raw in chunk]
    raws += [(raw, True) for raw in held]
    for raw, wrapped in raws:
        try:
            message = json.loads(raw)
        except (TypeError, ValueError):
            continue
        job_id = _task_id(message[0] if wrapped and isinstance(message, list) and message else message)
        if job_id:
            found.add(job_id)
    return found


@dataclass
class Pass:
    """What one pass of the reaper did."""

    requeued: list[str] = field(default_factory=list)
    """Running jobs of lost runs, queued again."""
    ended: list[str] = field(default_factory=list)
    """Running jobs of lost runs that ended instead (attempts used, or cancel requested): notify them."""
    resent: list[str] = field(default_factory=list)
    """Queued jobs whose message was lost, sent again."""

    def __bool__(self) -> bool:
        return bool(self.requeued or self.ended or self.resent)


class Reaper:
    """Runs :func:`run_pass` at most once per ``reaper_interval_s`` across every process that has one."""

    def __init__(self, store: JobStore, settings: Settings, send_task: SendTask,
                 notify: Callable[[str, str], None] | None = None) -> None:
        self.store, self.settings, self.send_task, self.notify = store, settings, send_task, notify
        self.token = uuid.uuid4().hex

    def _take_turn(self) -> bool:
        # held for most of an interval and never released: each process tries once an interval, and the
        # first one to try after it expired runs the pass, so passes are at most an interval apart
        ttl_ms = max(1, int(self.settings.reaper_interval_s * 800))
        return bool(self.store.redis.set(REAPER_LOCK, self.token, nx=True, px=ttl_ms))

    def maybe_run(self) -> Pass | None:
        """One pass when it is this process's turn (else None); its changes are logged and notified."""
        if not self._take_turn():
            return None
        done = run_pass(self.store, self.settings, self.send_task)
        if done.requeued:
            log.warning("queued again %d job(s) whose run was silent for over %g s: %s", len(done.requeued),
                        self.settings.worker_lost_s, ", ".join(done.requeued))
        if done.ended:
            log.warning("ended %d job(s) whose run was lost (attempts used or cancel requested): %s",
                        len(done.ended), ", ".join(done.ended))
        if done.resent:
            log.warning("sent again %d job(s) whose message was lost: %s", len(done.resent), ", ".join(done.resent))
        for job_id in done.ended:
            if self.notify is not None:
                self.notify(job_id, "completed")
        return done


def run_pass(store: JobStore, settings: Settings, send_task: SendTask) -> Pass:
    """Queue again the jobs of lost runs and send again lost messages (see the module's docstring)."""
    done = Pass()
    for item in store.requeue_lost(settings.worker_lost_s, settings.max_attempts):
        if item.outcome == "requeued":
            done.requeued.append(item.job_id)
            _send(send_task, settings.queue, item.job_id, item.generation)  # if it fails: step 2, later
        else:
            done.ended.append(item.job_id)
    candidates = store.queued_since(settings.message_lost_s)
    if candidates:
        present = broker_job_ids(store.redis, settings.queue)
        for job_id, since in _missing(candidates, present):
            generation = store.resend(job_id, since, settings.message_lost_s)
            if generation is not None:
                done.resent.append(job_id)
                _send(send_task, settings.queue, job_id, generation)
    return done


def _missing(candidates: dict[str, str], present: Iterable[str]) -> list[tuple[str, str]]:
    present = set(present)
    return [(job_id, since) for job_id, since in sorted(candidates.items()) if job_id not in present]


def _send(send_task: SendTask, queue: str, job_id: str, generation: int) -> None:
    try:
        send_job(send_task, queue, job_id, generation)
    except Exception as exc:  # noqa: BLE001 - the job stays queued without a message: the next passes resend it
        log.warning("job %s: could not send its message (generation %d): %s", job_id, generation, exc)
