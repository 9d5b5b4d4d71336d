"""Job records in Redis: one hash per job with a time to live, changed only by atomic scripts.

Both the API and the workers use :class:`JobStore`; every state change (the
moves of ``core.job_states.TRANSITIONS``) is a Lua script, so a cancel racing
a worker's start (or two deliveries of the same job) always ends in one
well-defined state. Writes never recreate an expired
record, so an expired job stays gone.

Its keys are ``core.keyspace``'s (``srgan:job:{id}`` and the sets, channels and counters around it).

A record's ``owner`` is the name of the API key that made the job (never the key).

Runs and messages are fenced so that a job runs and commits once: each start counts an attempt, and a
worker's writes (progress, its heartbeat, the end) name the attempt they belong to, so a run that was
given up (its worker presumed dead, the job queued again) can no longer change the record. Each message
that is sent for a job carries its ``generation``; queuing the job again counts it up, so an older message
that comes back later (the visibility timeout) is ``superseded`` and not run.

An event is ``{"seq": n, "type": "status"|"progress", "status": ..., "progress": 0..1, "at": unix time}``
(plus ``error`` on a failed, canceled or aborted job); ``seq`` counts the job's events from 1, in order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis

from core.job_record import DELIVERY_PREFIX, JSON_FIELDS, Job
from core.job_states import TERMINAL, Status
from core.job_stats import observe_durations
from core.keyspace import (
    DEADLINES,
    QUEUED_SET,
    RUNNING_SET,
    STATS,
    events_channel,
    events_log_key,
    job_key,
    owner_jobs_key,
    owner_queued_key,
    pixels_key,
)
from core.limits import JobLimits, refusal
from core.lua_scripts import register
from core.settings import ANONYMOUS

UPSCALE_TASK = "srgan.upscale"
"""Name of the Celery task that runs a job; the API sends it by this name."""

EVENT_LOG_MAX = 2000
"""Events kept per job for ``Last-Event-ID``; progress is written at most every 0.1 s, so this is minutes."""


def _exhausted(max_attempts: int) -> str:
    return json.dumps({
        "code": "attempts_exhausted",
        "message": f"the worker processing this job died {max_attempts} time(s); "
        "the image may crash or exhaust the engine, so it is not retried",
    })


def _fence(value: int | None) -> str:
    return "" if value is None else str(value)


def connect(url: str) -> redis.Redis:
    """A client for ``url`` that answers ``str`` and fails fast when Redis is away."""
    return redis.Redis.from_url(
        url, decode_responses=True, socket_connect_timeout=5, socket_timeout=10, health_check_interval=30
    )


@dataclass(frozen=True)
class Requeued:
    """What :meth:`JobStore.requeue_lost` did with one job whose run was lost."""

    job_id: str
    outcome: Literal["requeued", "failed", "canceled"]
    generation: int = 0
    """The job's new generation (``requeued``): its message must carry it."""


@dataclass(frozen=True)
class Claim:
    """What :meth:`JobStore.start` decided for one delivery of a job."""

    outcome: Literal["started", "missing", "finished", "exhausted", "canceled", "aborted", "superseded"]
    attempts: int = 0
    status: str | None = None


class JobStore:
    """Job records and the service's counters in one Redis database.

    The client answers ``str`` (:func:`connect`: ``decode_responses=True``); redis-py types every reply
    as ``bytes | str``, so the replies read here are cast to ``str``.
    """

    def __init__(self, client: redis.Redis, *, ttl_s: int) -> None:
        self.redis = client
        self.ttl_s = ttl_s
        lib = {"EVENT_LOG_MAX": EVENT_LOG_MAX}  # the values core/lua/job_lib.lua takes
        self._start = register(client, "job_start", **lib)
        self._finish = register(client, "job_finish", **lib)
        self._cancel = register(client, "job_cancel", **lib)
        self._update_running = register(client, "job_update_running", **lib)
        self._requeue = register(client, "job_requeue", **lib)
        self._resend = register(client, "job_resend")
        self._touch = register(client, "job_touch", **lib)
        self._admit = register(client, "job_admit")
        self._abort_overdue = register(client, "job_abort_overdue", **lib)
        self._set_if_exists = register(client, "job_set_if_exists")

    def _keys(self, job_id: str) -> list[str]:
        return [job_key(job_id), QUEUED_SET, RUNNING_SET, STATS]

    # --- API side ----------------------------------------------------------
    def create(self, job_id: str, *, input: dict[str, Any], params: dict[str, Any], owner: str = ANONYMOUS,
               limits: JobLimits | None = None, pixels: int = 0, extra: dict[str, Any] | None = None) -> Job:
        """Store a new ``queued`` job of ``owner`` that expires after ``ttl_s``.

        With ``limits``, the global and the owner's limits are checked and the job stored in one
        atomic step (``core.limits``); :class:`core.limits.Refused` says which limit refused it.
        ``extra``: optional fields of :class:`Job` (``deadline_at``, ``webhook``, ``batch_id``, ``source``);
        a ``deadline_at`` also enters the deadlines set (in the same step), so the job is aborted in time.
        """
        if extra and "owner" in extra:
            raise ValueError("the owner is create()'s own argument, not an extra field")
        limits = limits or JobLimits(max_queued=2**62)
        now = time.time()
        record = {
            "status": "queued",
            "progress": "0",
            "created_at": repr(now),
            "expires_at": repr(now + self.ttl_s),
            "queued_at": repr(now),
            "attempts": "0",
            "owner": owner,
            "input": json.dumps(input),
            "params": json.dumps(params),
        }
        record.update(self._extra_fields(extra))
        record["seq"] = "1"
        first = json.dumps({"seq": 1, "type": "status", "status": "queued", "progress": 0, "at": now})
        fields = [item for pair in record.items() for item in pair]
        verdict, retry_ms, detail = self._admit(
            keys=[job_key(job_id), QUEUED_SET, STATS, owner_queued_key(owner), owner_jobs_key(owner),
                  pixels_key(owner), events_log_key(job_id), DEADLINES],
            args=[job_id, limits.max_queued, limits.max_key_queued, limits.pixels_per_hour, pixels, self.ttl_s,
                  job_key(""), first, events_channel(job_id), record.get("deadline_at", ""), *fields],
        )
        if verdict != "ok":
            raise refusal(verdict, int(retry_ms), detail, limits, pixels)
        return Job.from_hash(job_id, record)

    @staticmethod
    def _extra_fields(extra: dict[str, Any] | None) -> dict[str, str]:
        return {name: json.dumps(value) if name in JSON_FIELDS else str(value)
                for name, value in (extra or {}).items() if value is not None}

    def jobs_of(self, owner: str, *, offset: int = 0, limit: int = 20) -> list[Job]:
        """``owner``'s jobs, newest first (expired ones are skipped and dropped from the index)."""
        index = owner_jobs_key(owner)
        ids = cast("list[str]", self.redis.zrevrange(index, offset, offset + limit - 1))
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(job_key(job_id))
            raws = pipe.execute()
        gone = [job_id for job_id, raw in zip(ids, raws) if not raw]
        if gone:
            self.redis.zrem(index, *gone)
        return [Job.from_hash(job_id, raw) for job_id, raw in zip(ids, raws) if raw]

    def create_failed(self, job_id: str, *, input: dict[str, Any], error: dict[str, str], owner: str = ANONYMOUS,
                      extra: dict[str, Any] | None = None) -> Job:
        """Store a job of ``owner`` that failed before it was queued (a bad file in a batch): it never runs."""
        if extra and "owner" in extra:
            raise ValueError("the owner is create_failed()'s own argument, not an extra field")
        now = time.time()
        record = {
            "status": "failed", "progress": "0", "created_at": repr(now), "finished_at": repr(now),
            "expires_at": repr(now + self.ttl_s), "attempts": "0", "owner": owner, "input": json.dumps(input),
            "params": json.dumps({}), "error": json.dumps(error), "seq": "1",
        }
        record.update(self._extra_fields(extra))
        with self.redis.pipeline(transaction=True) as pipe:
            # redis-py's Mapping[EncodableT, EncodableT] is invariant in its key: it refuses a dict[str, str]
            pipe.hset(job_key(job_id), mapping=record)  # type: ignore[arg-type]
            pipe.expire(job_key(job_id), self.ttl_s)
            self._first_event(pipe, job_id, {"seq": 1, "type": "status", "status": "failed", "progress": 0,
                                             "at": now, "error": error})
            pipe.hincrby(STATS, "jobs_total:failed", 1)
            pipe.zadd(owner_jobs_key(owner), {job_id: now})  # listed with the owner's other jobs
            pipe.expire(owner_jobs_key(owner), self.ttl_s)
            pipe.execute()
        return Job.from_hash(job_id, record)

    def _first_event(self, pipe: redis.client.Pipeline, job_id: str, event: dict[str, Any]) -> None:
        payload = json.dumps(event)
        pipe.delete(events_log_key(job_id))
        pipe.rpush(events_log_key(job_id), payload)
        pipe.expire(events_log_key(job_id), self.ttl_s)
        pipe.publish(events_channel(job_id), payload)

    def events_since(self, job_id: str, after_seq: int) -> list[dict[str, Any]]:
        """The job's recorded events with ``seq > after_seq``, oldest first (at most ``EVENT_LOG_MAX``)."""
        events = [json.loads(raw) for raw in self.redis.lrange(events_log_key(job_id), 0, -1)]
        return [event for event in events if int(event["seq"]) > after_seq]

    def set_fields(self, job_id: str, fields: dict[str, Any]) -> bool:
        """Set fields of an existing record (any status); False when it has expired."""
        args: list[str] = []
        for name, value in fields.items():
            args += [name, json.dumps(value) if name in JSON_FIELDS or name.startswith(DELIVERY_PREFIX)
                     else str(value)]
        return bool(self._set_if_exists(keys=[job_key(job_id)], args=args))

    def abort_overdue(self, now: float | None = None) -> list[str]:
        """End ``aborted`` every queued job whose deadline has passed; their ids."""
        now = time.time() if now is None else now
        error = json.dumps({"code": "deadline_exceeded",
                            "message": "the job's deadline passed before a worker started it; it did not run"})
        aborted = []
        for job_id in cast("list[str]", self.redis.zrangebyscore(DEADLINES, "-inf", now)):
            if self._abort_overdue(keys=[*self._keys(job_id), DEADLINES],
                                   args=[job_id, repr(now), error, events_channel(job_id)]):
                aborted.append(job_id)
        return aborted

    def get(self, job_id: str) -> Job | None:
        raw = cast("dict[str, str]", self.redis.hgetall(job_key(job_id)))
        return Job.from_hash(job_id, raw) if raw else None

    def cancel(self, job_id: str) -> str:
        """``canceled`` (was queued), ``cancel_requested`` (running), ``missing``, or ``finished:<status>``.

        After ``cancel_requested`` the job can only end ``canceled`` (see :meth:`finish`): its result
        had not been committed, and never will be.
        """
        return self._cancel(keys=self._keys(job_id), args=[job_id, repr(time.time()), events_channel(job_id)])

    def forget(self, job_id: str, owner: str = ANONYMOUS) -> None:
        """Remove a record that was never queued (its task could not be sent)."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(job_key(job_id))
            pipe.srem(QUEUED_SET, job_id)
            pipe.srem(owner_queued_key(owner), job_id)
            pipe.zrem(owner_jobs_key(owner), job_id)
            pipe.zrem(DEADLINES, job_id)
            pipe.delete(events_log_key(job_id))
            pipe.hincrby(STATS, "jobs_total:queued", -1)  # it was counted when created
            pipe.execute()

    def queued_count(self) -> int:
        return int(self.redis.scard(QUEUED_SET))

    # --- worker side -------------------------------------------------------
    def start(self, job_id: str, *, worker: str, max_attempts: int, generation: int = 0) -> Claim:
        """Claim a delivery of ``job_id`` (a message of ``generation``): count the attempt, mark it ``running``.

        A job whose attempts are used up is failed here with ``attempts_exhausted``
        (its earlier deliveries died with their worker); one whose cancel was
        requested ends ``canceled``; a finished or expired job is left alone, and
        so is one that was queued again since this message was sent (``superseded``).
        The claim's ``attempts`` names the run: its writes pass it as ``attempt``.
        """
        late = json.dumps({"code": "deadline_exceeded", "message": "the job's deadline passed before it could run"})
        outcome, attempts, status = self._start(
            keys=[*self._keys(job_id), DEADLINES],
            args=[job_id, repr(time.time()), max_attempts, worker, _exhausted(max_attempts), events_channel(job_id),
                  late, generation],
        )
        return Claim(outcome=outcome, attempts=int(attempts), status=status or None)

    def update_running(self, job_id: str, *, attempt: int | None = None, **fields: Any) -> bool:
        """Set fields of a running job (``progress``, ``model``, ...); False when it is not running (that
        ``attempt``, when given)."""
        if not fields:
            return True
        args: list[str] = [events_channel(job_id), _fence(attempt)]
        for name, value in fields.items():
            args += [name, json.dumps(value) if name in JSON_FIELDS else str(value)]
        return bool(self._update_running(keys=[job_key(job_id)], args=args))

    def touch(self, job_id: str, attempt: int) -> bool:
        """The heartbeat of a run: note that ``attempt`` of the job is alive; False once it is no longer
        the job's current run (ended, queued again, expired): the run should stop."""
        return bool(self._touch(keys=[job_key(job_id)], args=[attempt]))

    def should_stop(self, job_id: str, attempt: int | None = None) -> bool:
        """True when the running job was canceled, is past its deadline, has expired, is no longer ``running``,
        or (given ``attempt``) is running another attempt: this run was given up."""
        status, cancel, deadline, attempts = cast(
            "list[str | None]", self.redis.hmget(job_key(job_id), "status", "cancel", "deadline_at", "attempts"))
        return (status != "running" or cancel == "1" or bool(deadline and time.time() >= float(deadline))
                or (attempt is not None and attempts != str(attempt)))

    def cancel_requested(self, job_id: str) -> bool:
        return self.redis.hget(job_key(job_id), "cancel") == "1"

    def finish(self, job_id: str, status: Status, *, generation: int | None = None, attempt: int | None = None,
               **fields: Any) -> str:
        """Move a queued or running job to a terminal ``status``.

        Returns ``ok``; ``canceled`` when a cancel had been requested (the job ends
        ``canceled`` instead, its ``fields`` unset: a result must then be discarded);
        ``missing``; the status the job had already reached; or ``superseded`` when the
        caller's run is no longer the job's own (``generation`` of its message or its
        ``attempt``, when given, differ: the job was queued again), which changes nothing.
        """
        assert status in TERMINAL, status
        now = time.time()
        args: list[Any] = [job_id, repr(now), status, events_channel(job_id), _fence(generation), _fence(attempt)]
        for name, value in fields.items():
            if value is not None:
                args += [name, json.dumps(value) if name in JSON_FIELDS else str(value)]
        result = self._finish(keys=self._keys(job_id), args=args)
        if result == "ok":
            observe_durations(self.redis, job_id, status, now)
        elif result == "canceled" and status != "canceled":
            observe_durations(self.redis, job_id, "canceled", now)
        return result

    # --- housekeeping ---------------------------------------------------------
    def requeue_lost(self, max_silence_s: float, max_attempts: int) -> list[Requeued]:
        """Queue again the running jobs whose run has sent no heartbeat for over ``max_silence_s``.

        Such a job was left ``running`` by a worker that died (or lost Redis, or gave the job up
        after Redis errors). Each is queued again with its next generation, for the caller to send
        its message; one whose attempts are used ends ``failed`` with ``attempts_exhausted``, one
        whose cancel was requested ends ``canceled``. Runs that beat are untouched; a run ending as
        it is requeued ends in one state (whichever script runs first), and a late run of a requeued
        job is fenced off (:meth:`finish` answers ``superseded``).
        """
        error = _exhausted(max_attempts)
        done = []
        for job_id in sorted(cast("set[str]", self.redis.smembers(RUNNING_SET))):
            code, generation = self._requeue(keys=[*self._keys(job_id), DEADLINES],
                                             args=[job_id, repr(float(max_silence_s)), max_attempts, error,
                                                   events_channel(job_id)])
            if code:
                outcome = {1: "requeued", 2: "failed", 3: "canceled"}[int(code)]
                if outcome != "requeued":
                    observe_durations(self.redis, job_id, outcome, time.time())
                done.append(Requeued(job_id, outcome, int(generation)))  # type: ignore[arg-type]
        return done

    def queued_since(self, older_than_s: float) -> dict[str, str]:
        """Queued jobs that entered the queue over ``older_than_s`` ago: id -> that moment, as stored."""
        ids = sorted(cast("set[str]", self.redis.smembers(QUEUED_SET)))
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(job_key(job_id), "status", "queued_at", "created_at")
            rows = pipe.execute()
        cutoff = time.time() - older_than_s
        found = {}
        for job_id, (status, queued_at, created_at) in zip(ids, rows):
            since = queued_at or created_at
            if status == "queued" and since and float(since) < cutoff:
                found[job_id] = since
        return found

    def resend(self, job_id: str, since: str, min_age_s: float) -> int | None:
        """Give a queued job whose message was lost its next generation; None when it changed meanwhile
        (``since``: when it entered the queue, as :meth:`queued_since` read it)."""
        generation = int(self._resend(keys=[job_key(job_id), STATS], args=[since, repr(float(min_age_s))]))
        return generation if generation >= 0 else None

    def existing(self, job_ids: Iterable[str]) -> dict[str, bool]:
        ids = list(job_ids)
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.exists(job_key(job_id))
            return {job_id: bool(found) for job_id, found in zip(ids, pipe.execute())}

    def prune_state_sets(self) -> int:
        """Drop ids of expired records from the queued/running sets; how many were dropped."""
        dropped = 0
        for set_key in (QUEUED_SET, RUNNING_SET):
            members = list(cast("set[str]", self.redis.smembers(set_key)))
            gone = [job_id for job_id, found in self.existing(members).items() if not found]
            if gone:
                dropped += int(self.redis.srem(set_key, *gone))
        return dropped

    def stats(self) -> dict[str, str]:
        return cast("dict[str, str]", self.redis.hgetall(STATS))

    def state_counts(self) -> dict[str, int]:
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.scard(QUEUED_SET)
            pipe.scard(RUNNING_SET)
            queued, running = pipe.execute()
        return {"queued": int(queued), "running": int(running)}
