"""Job records in Redis: one hash per job with a time to live, changed only by atomic scripts.

Both the API and the workers use :class:`JobStore`; every state change is a Lua
script, so a cancel racing a worker's start (or two deliveries of the same
job) always ends in one well-defined state. Writes never recreate an expired
record, so an expired job stays gone.

Keys (all under ``srgan:``)::

    job:{id}          hash: the record (fields below), EXPIRE = job_ttl_s
    jobs:queued       set of ids waiting for a worker   (gauges, queue limit)
    jobs:running      set of ids being worked on
    stats             hash of counters and histogram buckets for /metrics
    workers           sorted set: worker name -> last heartbeat (unix time)
    events:{id}       pub/sub channel: the new status of the job
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import redis

Status = Literal["queued", "running", "succeeded", "failed", "canceled"]
STATUSES: tuple[Status, ...] = ("queued", "running", "succeeded", "failed", "canceled")
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "canceled"})

UPSCALE_TASK = "srgan.upscale"
"""Name of the Celery task that runs a job; the API sends it by this name."""

PREFIX = "srgan:"
QUEUED_SET = PREFIX + "jobs:queued"
RUNNING_SET = PREFIX + "jobs:running"
STATS = PREFIX + "stats"
WORKERS = PREFIX + "workers"
EVENTS_PATTERN = PREFIX + "events:*"

DURATION_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, math.inf)
"""Upper bounds (seconds) of the job duration histograms kept in ``stats``."""

_JSON_FIELDS = ("input", "params", "model", "output", "error", "timings", "warnings")


def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def events_channel(job_id: str) -> str:
    return f"{PREFIX}events:{job_id}"


def new_job_id() -> str:
    return str(uuid.uuid4())


def is_job_id(value: str) -> bool:
    """True for the canonical form of a UUID (what :func:`new_job_id` makes)."""
    try:
        return str(uuid.UUID(value)) == value
    except (ValueError, AttributeError, TypeError):
        return False


def connect(url: str) -> redis.Redis:
    """A client for ``url`` that answers ``str`` and fails fast when Redis is away."""
    return redis.Redis.from_url(
        url, decode_responses=True, socket_connect_timeout=5, socket_timeout=10, health_check_interval=30
    )


@dataclass
class Job:
    """A job record as stored. ``input``/``params``/... are small JSON objects."""

    id: str
    status: Status
    progress: float = 0.0
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = None
    attempts: int = 0
    cancel_requested: bool = False
    worker: str | None = None
    input: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] | None = None
    output: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    timings: dict[str, float] | None = None
    warnings: list[str] = field(default_factory=list)
    """What was dropped or changed on the way (e.g. EXIF that could not be written back)."""

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_hash(cls, job_id: str, raw: dict[str, str]) -> Job:
        def num(name: str) -> float | None:
            value = raw.get(name)
            return float(value) if value not in (None, "") else None

        parsed = {name: json.loads(raw[name]) for name in _JSON_FIELDS if raw.get(name)}
        return cls(
            id=job_id,
            status=raw.get("status", "queued"),  # type: ignore[arg-type]
            progress=float(raw.get("progress") or 0.0),
            created_at=float(raw.get("created_at") or 0.0),
            started_at=num("started_at"),
            finished_at=num("finished_at"),
            expires_at=num("expires_at"),
            attempts=int(raw.get("attempts") or 0),
            cancel_requested=raw.get("cancel") == "1",
            worker=raw.get("worker") or None,
            input=parsed.get("input", {}),
            params=parsed.get("params", {}),
            model=parsed.get("model"),
            output=parsed.get("output"),
            error=parsed.get("error"),
            timings=parsed.get("timings"),
            warnings=parsed.get("warnings") or [],
        )


@dataclass(frozen=True)
class Claim:
    """What :meth:`JobStore.start` decided for one delivery of a job."""

    outcome: Literal["started", "missing", "finished", "exhausted", "canceled"]
    attempts: int = 0
    status: str | None = None


# --- scripts -------------------------------------------------------------
# KEYS[1] = job hash, KEYS[2] = queued set, KEYS[3] = running set, KEYS[4] = stats
# Each script publishes the new status on events:{id} (ARGV[1] = job id).

_START = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing', 0, ''} end
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'running' then return {'finished', 0, status} end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
local final = nil
if redis.call('HGET', KEYS[1], 'cancel') == '1' then
  final = 'canceled'
elseif attempts > tonumber(ARGV[3]) then
  final = 'failed'
  redis.call('HSET', KEYS[1], 'error', ARGV[5])
end
if final then
  redis.call('HSET', KEYS[1], 'status', final, 'finished_at', ARGV[2])
  redis.call('SREM', KEYS[2], ARGV[1])
  redis.call('SREM', KEYS[3], ARGV[1])
  redis.call('HINCRBY', KEYS[4], 'jobs_total:' .. final, 1)
  redis.call('PUBLISH', ARGV[6], final)
  if final == 'failed' then return {'exhausted', attempts, final} end
  return {'canceled', attempts, final}
end
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[2], 'worker', ARGV[4], 'progress', '0')
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
if status == 'queued' then redis.call('HINCRBY', KEYS[4], 'jobs_total:running', 1) end
redis.call('PUBLISH', ARGV[6], 'running')
return {'started', attempts, 'running'}
"""

# ARGV: id, now, new status, channel, then field/value pairs to set.
# A job whose cancel was requested ends 'canceled' whatever the worker reports (its fields are not
# set): the cancel came before the result was committed, and the DELETE that set the flag said so.
_FINISH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'running' then return status end
local final = ARGV[3]
if redis.call('HGET', KEYS[1], 'cancel') == '1' then final = 'canceled' end
redis.call('HSET', KEYS[1], 'status', final, 'finished_at', ARGV[2])
if final == 'succeeded' then redis.call('HSET', KEYS[1], 'progress', '1') end
if final == ARGV[3] then
  for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[4], 'jobs_total:' .. final, 1)
redis.call('PUBLISH', ARGV[4], final)
if final ~= ARGV[3] then return 'canceled' end
return 'ok'
"""

# ARGV: id, now, channel
_CANCEL = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'canceled', 'finished_at', ARGV[2], 'cancel', '1')
  redis.call('SREM', KEYS[2], ARGV[1])
  redis.call('HINCRBY', KEYS[4], 'jobs_total:canceled', 1)
  redis.call('PUBLISH', ARGV[3], 'canceled')
  return 'canceled'
elseif status == 'running' then
  redis.call('HSET', KEYS[1], 'cancel', '1')
  return 'cancel_requested'
end
return 'finished:' .. status
"""

# KEYS[5] = workers' heartbeats; ARGV: id, now, max silence (s), error JSON, channel.
# A running job is failed when its worker was last seen (its latest heartbeat, or the job's start,
# whichever is later) more than ARGV[3] seconds ago. One script with _FINISH and _START: a worker
# finishing (or a new delivery starting) the job at the same moment either comes first, and this
# leaves the job alone, or comes second and finds it failed.
_REAP = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'running' then return 0 end
local seen = tonumber(redis.call('HGET', KEYS[1], 'started_at')) or 0
local worker = redis.call('HGET', KEYS[1], 'worker')
if worker then
  local beat = tonumber(redis.call('ZSCORE', KEYS[5], worker))
  if beat and beat > seen then seen = beat end
end
if tonumber(ARGV[2]) - seen <= tonumber(ARGV[3]) then return 0 end
if redis.call('HGET', KEYS[1], 'cancel') == '1' then  -- its cancel was requested: that is how it ends
  redis.call('HSET', KEYS[1], 'status', 'canceled', 'finished_at', ARGV[2])
  redis.call('HINCRBY', KEYS[4], 'jobs_total:canceled', 1)
  redis.call('PUBLISH', ARGV[5], 'canceled')
  redis.call('SREM', KEYS[2], ARGV[1])
  redis.call('SREM', KEYS[3], ARGV[1])
  return 2
else
  redis.call('HSET', KEYS[1], 'status', 'failed', 'finished_at', ARGV[2], 'error', ARGV[4])
  redis.call('HINCRBY', KEYS[4], 'jobs_total:failed', 1)
  redis.call('PUBLISH', ARGV[5], 'failed')
end
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
return 1
"""

# ARGV: field/value pairs; only while running (progress, model, timings of the current attempt)
_UPDATE_RUNNING = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""


class JobStore:
    """Job records and the service's counters in one Redis database."""

    def __init__(self, client: redis.Redis, *, ttl_s: int) -> None:
        self.redis = client
        self.ttl_s = ttl_s
        self._start = client.register_script(_START)
        self._finish = client.register_script(_FINISH)
        self._cancel = client.register_script(_CANCEL)
        self._update_running = client.register_script(_UPDATE_RUNNING)
        self._reap = client.register_script(_REAP)

    def _keys(self, job_id: str) -> list[str]:
        return [job_key(job_id), QUEUED_SET, RUNNING_SET, STATS]

    # --- API side ----------------------------------------------------------
    def create(self, job_id: str, *, input: dict[str, Any], params: dict[str, Any]) -> Job:
        """Store a new ``queued`` job that expires after ``ttl_s``."""
        now = time.time()
        record = {
            "status": "queued",
            "progress": "0",
            "created_at": repr(now),
            "expires_at": repr(now + self.ttl_s),
            "attempts": "0",
            "input": json.dumps(input),
            "params": json.dumps(params),
        }
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(job_key(job_id), mapping=record)
            pipe.expire(job_key(job_id), self.ttl_s)
            pipe.sadd(QUEUED_SET, job_id)
            pipe.hincrby(STATS, "jobs_total:queued", 1)
            pipe.execute()
        return Job.from_hash(job_id, record)

    def get(self, job_id: str) -> Job | None:
        raw = self.redis.hgetall(job_key(job_id))
        return Job.from_hash(job_id, raw) if raw else None

    def cancel(self, job_id: str) -> str:
        """``canceled`` (was queued), ``cancel_requested`` (running), ``missing``, or ``finished:<status>``.

        After ``cancel_requested`` the job can only end ``canceled`` (see :meth:`finish`): its result
        had not been committed, and never will be.
        """
        return self._cancel(keys=self._keys(job_id), args=[job_id, repr(time.time()), events_channel(job_id)])

    def forget(self, job_id: str) -> None:
        """Remove a record that was never queued (its task could not be sent)."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(job_key(job_id))
            pipe.srem(QUEUED_SET, job_id)
            pipe.hincrby(STATS, "jobs_total:queued", -1)  # it was counted when created
            pipe.execute()

    def queued_count(self) -> int:
        return int(self.redis.scard(QUEUED_SET))

    # --- worker side -------------------------------------------------------
    def start(self, job_id: str, *, worker: str, max_attempts: int) -> Claim:
        """Claim a delivery of ``job_id``: count the attempt and mark it ``running``.

        A job whose attempts are used up is failed here with ``attempts_exhausted``
        (its earlier deliveries died with their worker); one whose cancel was
        requested ends ``canceled``; a finished or expired job is left alone.
        """
        error = json.dumps(
            {
                "code": "attempts_exhausted",
                "message": f"the worker processing this job died {max_attempts} time(s); "
                "the image may crash or exhaust the engine, so it is not retried",
            }
        )
        outcome, attempts, status = self._start(
            keys=self._keys(job_id),
            args=[job_id, repr(time.time()), max_attempts, worker, error, events_channel(job_id)],
        )
        return Claim(outcome=outcome, attempts=int(attempts), status=status or None)

    def update_running(self, job_id: str, **fields: Any) -> bool:
        """Set fields of a running job (``progress``, ``model``, ...); False when it is not running."""
        if not fields:
            return True
        args: list[str] = []
        for name, value in fields.items():
            args += [name, json.dumps(value) if name in _JSON_FIELDS else str(value)]
        return bool(self._update_running(keys=[job_key(job_id)], args=args))

    def should_stop(self, job_id: str) -> bool:
        """True when the running job was canceled, has expired, or is no longer ``running``."""
        status, cancel = self.redis.hmget(job_key(job_id), "status", "cancel")
        return status != "running" or cancel == "1"

    def finish(self, job_id: str, status: Status, **fields: Any) -> str:
        """Move a queued or running job to a terminal ``status``.

        Returns ``ok``; ``canceled`` when a cancel had been requested (the job ends
        ``canceled`` instead, its ``fields`` unset: a result must then be discarded);
        ``missing``; or the status the job had already reached.
        """
        assert status in TERMINAL, status
        now = time.time()
        args: list[Any] = [job_id, repr(now), status, events_channel(job_id)]
        for name, value in fields.items():
            if value is not None:
                args += [name, json.dumps(value) if name in _JSON_FIELDS else str(value)]
        result = self._finish(keys=self._keys(job_id), args=args)
        if result == "ok":
            self._observe_durations(job_id, status, now)
        elif result == "canceled" and status != "canceled":
            self._observe_durations(job_id, "canceled", now)
        return result

    def _observe_durations(self, job_id: str, status: str, now: float) -> None:
        created, started = self.redis.hmget(job_key(job_id), "created_at", "started_at")
        observations = {"total": now - float(created or now)}
        if started:
            observations["run"] = now - float(started)
        with self.redis.pipeline(transaction=False) as pipe:
            for phase, seconds in observations.items():
                bucket = next(b for b in DURATION_BUCKETS if seconds <= b)
                prefix = f"duration:{phase}:{status}"
                pipe.hincrby(STATS, f"{prefix}:bucket:{bucket}", 1)
                pipe.hincrbyfloat(STATS, f"{prefix}:sum", seconds)
                pipe.hincrby(STATS, f"{prefix}:count", 1)
            pipe.execute()

    # --- workers' heartbeats ------------------------------------------------
    def heartbeat(self, worker: str) -> None:
        self.redis.zadd(WORKERS, {worker: time.time()})

    def worker_gone(self, worker: str) -> None:
        self.redis.zrem(WORKERS, worker)

    def live_workers(self, max_age_s: float) -> list[str]:
        """Workers whose last heartbeat is at most ``max_age_s`` old; older entries are pruned."""
        now = time.time()
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(WORKERS, "-inf", now - max(max_age_s, 60.0))
            pipe.zrangebyscore(WORKERS, now - max_age_s, "+inf")
            return list(pipe.execute()[1])

    # --- housekeeping ---------------------------------------------------------
    def reap_lost(self, max_silence_s: float) -> list[str]:
        """Fail running jobs whose worker has sent no heartbeat for over ``max_silence_s``; their ids.

        Such a job was left ``running`` by a worker that died (or lost Redis) without its
        message coming back. It ends ``failed`` with ``worker_lost``. Jobs of live workers
        are untouched, and a worker finishing a job as it is reaped ends in one state:
        whichever script runs first wins, and :meth:`finish` never revives a reaped job.
        """
        error = json.dumps({
            "code": "worker_lost",
            "message": f"the worker running this job sent no heartbeat for over {max_silence_s:g} s "
            "and is presumed dead; the job was failed and is not retried",
        })
        reaped = []
        for job_id in sorted(self.redis.smembers(RUNNING_SET)):
            now = time.time()
            reaped_as = self._reap(keys=[*self._keys(job_id), WORKERS],
                                   args=[job_id, repr(now), repr(float(max_silence_s)), error, events_channel(job_id)])
            if reaped_as:
                self._observe_durations(job_id, "canceled" if reaped_as == 2 else "failed", now)
                reaped.append(job_id)
        return reaped

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
            members = list(self.redis.smembers(set_key))
            gone = [job_id for job_id, found in self.existing(members).items() if not found]
            if gone:
                dropped += int(self.redis.srem(set_key, *gone))
        return dropped

    def stats(self) -> dict[str, str]:
        return self.redis.hgetall(STATS)

    def state_counts(self) -> dict[str, int]:
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.scard(QUEUED_SET)
            pipe.scard(RUNNING_SET)
            queued, running = pipe.execute()
        return {"queued": int(queued), "running": int(running)}
