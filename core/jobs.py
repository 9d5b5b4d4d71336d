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
    events:{id}       pub/sub channel: each change of the job, as the JSON event below
    job:{id}:events   list: the job's last EVENT_LOG_MAX events (``Last-Event-ID`` resumes from it), same TTL
    deadlines         sorted set: id -> deadline (unix time) of queued jobs that have one
    reaper            lock: held by the process whose reaper pass runs now (``core.recovery``)
    owner:{name}:...  a key's jobs and its limits' state (``core.limits``, which admits new jobs)

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
import math
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import redis

from core.limits import JobLimits, admit_script, owner_jobs_key, owner_queued_key, pixels_key, refusal
from core.settings import ANONYMOUS

Status = Literal["queued", "running", "succeeded", "failed", "canceled", "aborted"]
STATUSES: tuple[Status, ...] = ("queued", "running", "succeeded", "failed", "canceled", "aborted")
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "canceled", "aborted"})
"""``aborted``: the job's deadline passed before it started, so it never ran (``canceled``: stopped by a
cancel, or by its deadline while running)."""

UPSCALE_TASK = "srgan.upscale"
"""Name of the Celery task that runs a job; the API sends it by this name."""

PREFIX = "srgan:"
QUEUED_SET = PREFIX + "jobs:queued"
RUNNING_SET = PREFIX + "jobs:running"
STATS = PREFIX + "stats"
WORKERS = PREFIX + "workers"
EVENTS_PATTERN = PREFIX + "events:*"
DEADLINES = PREFIX + "deadlines"
EVENT_LOG_MAX = 2000
"""Events kept per job for ``Last-Event-ID``; progress is written at most every 0.1 s, so this is minutes."""

DURATION_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, math.inf)
"""Upper bounds (seconds) of the job duration histograms kept in ``stats``."""

_JSON_FIELDS = ("input", "params", "model", "output", "error", "timings", "webhook", "source", "warnings")
_DELIVERY_PREFIX = "webhook:"
"""``webhook:<event>`` fields hold the last delivery of each webhook event (JSON), one field per event
so deliveries running at once never overwrite each other's record."""


def _exhausted(max_attempts: int) -> str:
    return json.dumps({
        "code": "attempts_exhausted",
        "message": f"the worker processing this job died {max_attempts} time(s); "
        "the image may crash or exhaust the engine, so it is not retried",
    })


def _fence(value: int | None) -> str:
    return "" if value is None else str(value)


def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def events_channel(job_id: str) -> str:
    return f"{PREFIX}events:{job_id}"


def events_log_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}:events"


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
    owner: str | None = None
    """The name of the API key that made the job (``anonymous`` with authentication off); its jobs,
    batches and idempotency keys are the owner's alone."""
    input: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] | None = None
    output: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    timings: dict[str, float] | None = None
    deadline_at: float | None = None
    webhook: dict[str, Any] | None = None
    """``{"url": ..., "events": [...]}`` when the job has a webhook."""
    webhook_deliveries: dict[str, Any] | None = None
    """Per event: its last message ``{"id", "attempts", "last_status", "last_error", "state", ...}`` (workers)."""
    batch_id: str | None = None
    source: dict[str, Any] | None = None
    """``{"url": ...}`` for an image fetched from a URL."""
    seq: int = 0
    generation: int = 0
    """Counts the times the job was queued again (``core.recovery``); only a message of this generation runs it."""
    queued_at: float | None = None
    """When the job last entered the queue (made, or queued again)."""
    beat_at: float | None = None
    """The last heartbeat of the run of a ``running`` job (Redis time)."""
    warnings: list[str] = field(default_factory=list)
    """What was dropped or changed on the way (e.g. EXIF that could not be written back)."""
    eta_s: float | None = None
    """Seconds left of a running job's run, from its worker's measured speed (None when not running)."""

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
            owner=raw.get("owner") or None,
            input=parsed.get("input", {}),
            params=parsed.get("params", {}),
            model=parsed.get("model"),
            output=parsed.get("output"),
            error=parsed.get("error"),
            timings=parsed.get("timings"),
            deadline_at=num("deadline_at"),
            webhook=parsed.get("webhook"),
            webhook_deliveries={name[len(_DELIVERY_PREFIX):]: json.loads(value) for name, value in raw.items()
                                if name.startswith(_DELIVERY_PREFIX)} or None,
            batch_id=raw.get("batch_id") or None,
            source=parsed.get("source"),
            seq=int(raw.get("seq") or 0),
            generation=int(raw.get("generation") or 0),
            queued_at=num("queued_at"),
            beat_at=num("beat_at"),
            warnings=parsed.get("warnings") or [],
            eta_s=num("eta_s") if raw.get("status") == "running" else None,
        )


def download_name(job: Job, ext: str | None = None) -> str:
    """The file name a job's result is downloaded under: ``<input stem>_x<scale>.<ext>``."""
    stem = str(job.input.get("filename") or "image").rsplit(".", 1)[0] or "image"
    scale = (job.model or {}).get("scale") if not job.params.get("scale") else job.params["scale"]
    ext = ext or (job.output or {}).get("ext", "png")
    return f"{stem}_x{scale}.{ext}" if scale else f"{stem}_sr.{ext}"


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


# --- scripts -------------------------------------------------------------
# KEYS[1] = job hash, KEYS[2] = queued set, KEYS[3] = running set, KEYS[4] = stats
# Each script records the change with emit(): the job's seq is counted up, the event appended to
# job:{id}:events (trimmed, same TTL as the job) and published on events:{id} (ARGV[1] = job id).

_EMIT = """
local function emit(job, channel, kind)
  local seq = redis.call('HINCRBY', job, 'seq', 1)
  local f = redis.call('HMGET', job, 'status', 'progress', 'error', 'eta_s')
  local t = redis.call('TIME')
  local event = {seq = seq, type = kind, status = f[1], progress = tonumber(f[2]) or 0,
                 at = tonumber(t[1]) + tonumber(t[2]) / 1000000}
  if f[3] and kind == 'status' then event['error'] = cjson.decode(f[3]) end
  if f[4] and f[1] == 'running' then event['eta_s'] = tonumber(f[4]) end
  local payload = cjson.encode(event)
  local log = job .. ':events'
  redis.call('RPUSH', log, payload)
  redis.call('LTRIM', log, -%d, -1)
  local ttl = redis.call('PTTL', job)
  if ttl > 0 then redis.call('PEXPIRE', log, ttl) end
  redis.call('PUBLISH', channel, payload)
end

local function now_s()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- a write of a run that is no longer the job's current one: its message's generation, or its attempt
-- ('' = not checked), differs from the record's
local function stale(job, generation, attempt)
  if generation ~= '' and (tonumber(redis.call('HGET', job, 'generation')) or 0) ~= tonumber(generation) then
    return true
  end
  return attempt ~= '' and redis.call('HGET', job, 'attempts') ~= attempt
end
""" % EVENT_LOG_MAX  # noqa: UP031 - the Lua tables' braces rule out str.format and f-strings

# ARGV[7] = the deadline_exceeded error JSON: a job whose deadline passed ends aborted (never started)
# or canceled (a redelivery of a job that was running). ARGV[8] = the message's generation: an older
# message than the job's (it was queued again since) is superseded and changes nothing.
_START = _EMIT + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing', 0, ''} end
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'running' then return {'finished', 0, status} end
if tonumber(ARGV[8]) < (tonumber(redis.call('HGET', KEYS[1], 'generation')) or 0) then
  return {'superseded', 0, status}
end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
local final = nil
local deadline = tonumber(redis.call('HGET', KEYS[1], 'deadline_at'))
if redis.call('HGET', KEYS[1], 'cancel') == '1' then
  final = 'canceled'
elseif deadline and tonumber(ARGV[2]) >= deadline then
  if status == 'queued' then final = 'aborted' else final = 'canceled' end
  redis.call('HSET', KEYS[1], 'error', ARGV[7])
  redis.call('ZREM', KEYS[5], ARGV[1])
elseif attempts > tonumber(ARGV[3]) then
  final = 'failed'
  redis.call('HSET', KEYS[1], 'error', ARGV[5])
end
if final then
  redis.call('HSET', KEYS[1], 'status', final, 'finished_at', ARGV[2])
  redis.call('SREM', KEYS[2], ARGV[1])
  redis.call('SREM', KEYS[3], ARGV[1])
  redis.call('HINCRBY', KEYS[4], 'jobs_total:' .. final, 1)
  emit(KEYS[1], ARGV[6], 'status')
  if final == 'failed' then return {'exhausted', attempts, final} end
  if final == 'aborted' then return {'aborted', attempts, final} end
  return {'canceled', attempts, final}
end
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[2], 'worker', ARGV[4], 'progress', '0',
           'beat_at', now_s())
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
if status == 'queued' then redis.call('HINCRBY', KEYS[4], 'jobs_total:running', 1) end
emit(KEYS[1], ARGV[6], 'status')
return {'started', attempts, 'running'}
"""

# ARGV: id, now, new status, channel, the run's fence (5: generation, 6: attempt; '' = not checked),
# then field/value pairs to set. A fenced end of a run that is no longer current is 'superseded'.
# A job whose cancel was requested ends 'canceled' whatever the worker reports (its fields are not
# set): the cancel came before the result was committed, and the DELETE that set the flag said so.
_FINISH = _EMIT + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'running' then return status end
if stale(KEYS[1], ARGV[5], ARGV[6]) or (ARGV[6] ~= '' and status ~= 'running') then return 'superseded' end
local final = ARGV[3]
if redis.call('HGET', KEYS[1], 'cancel') == '1' then final = 'canceled' end
redis.call('HSET', KEYS[1], 'status', final, 'finished_at', ARGV[2])
if final == 'succeeded' then redis.call('HSET', KEYS[1], 'progress', '1') end
if final == ARGV[3] then
  for i = 7, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[4], 'jobs_total:' .. final, 1)
emit(KEYS[1], ARGV[4], 'status')
if final ~= ARGV[3] then return 'canceled' end
return 'ok'
"""

# ARGV: id, now, channel
_CANCEL = _EMIT + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'canceled', 'finished_at', ARGV[2], 'cancel', '1')
  redis.call('SREM', KEYS[2], ARGV[1])
  redis.call('HINCRBY', KEYS[4], 'jobs_total:canceled', 1)
  emit(KEYS[1], ARGV[3], 'status')
  return 'canceled'
elseif status == 'running' then
  redis.call('HSET', KEYS[1], 'cancel', '1')
  return 'cancel_requested'
end
return 'finished:' .. status
"""

# KEYS[5] = deadlines; ARGV: id, max silence (s), max attempts, attempts_exhausted error JSON, channel.
# A running job whose run sent no heartbeat (nor started) for over ARGV[2] seconds of Redis time is
# presumed lost with its worker: it is queued again with the next generation (returns {1, generation};
# the caller sends its message), or ends failed when its attempts are used ({2, 0}), or canceled when
# its cancel was requested ({3, 0}). One script with _START, _FINISH and _TOUCH: a run that beats or
# ends at the same moment either comes first (and the job is left alone) or finds itself superseded;
# a second reaper finds the job queued and leaves it alone.
_REQUEUE = _EMIT + """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return {0, 0} end
local now = now_s()
local seen = tonumber(redis.call('HGET', KEYS[1], 'beat_at'))
  or tonumber(redis.call('HGET', KEYS[1], 'started_at')) or 0
if now - seen <= tonumber(ARGV[2]) then return {0, 0} end
local final = nil
if redis.call('HGET', KEYS[1], 'cancel') == '1' then  -- its cancel was requested: that is how it ends
  final = 'canceled'
  redis.call('HSET', KEYS[1], 'status', 'canceled', 'finished_at', now)
elseif (tonumber(redis.call('HGET', KEYS[1], 'attempts')) or 0) >= tonumber(ARGV[3]) then
  final = 'failed'
  redis.call('HSET', KEYS[1], 'status', 'failed', 'finished_at', now, 'error', ARGV[4])
end
redis.call('SREM', KEYS[3], ARGV[1])
if final then
  redis.call('SREM', KEYS[2], ARGV[1])
  redis.call('HINCRBY', KEYS[4], 'jobs_total:' .. final, 1)
  emit(KEYS[1], ARGV[5], 'status')
  if final == 'failed' then return {2, 0} end
  return {3, 0}
end
local generation = redis.call('HINCRBY', KEYS[1], 'generation', 1)
redis.call('HSET', KEYS[1], 'status', 'queued', 'progress', '0', 'queued_at', now)
redis.call('HDEL', KEYS[1], 'beat_at', 'worker')
redis.call('SADD', KEYS[2], ARGV[1])
local deadline = tonumber(redis.call('HGET', KEYS[1], 'deadline_at'))
if deadline then redis.call('ZADD', KEYS[5], deadline, ARGV[1]) end
redis.call('HINCRBY', KEYS[4], 'requeues_total', 1)
emit(KEYS[1], ARGV[5], 'status')
return {1, generation}
"""

# ARGV: when the job entered the queue as the caller saw it, min age (s). A queued job whose message
# the caller found missing from the broker is given the next generation (returned; the caller sends
# its message) unless it changed meanwhile (started, queued again by another reaper): then -1.
_RESEND = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return -1 end
local since = redis.call('HGET', KEYS[1], 'queued_at') or redis.call('HGET', KEYS[1], 'created_at')
if since ~= ARGV[1] then return -1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if now - tonumber(since) <= tonumber(ARGV[2]) then return -1 end
local generation = redis.call('HINCRBY', KEYS[1], 'generation', 1)
redis.call('HSET', KEYS[1], 'queued_at', now)
redis.call('HINCRBY', KEYS[2], 'resends_total', 1)
return generation
"""

# ARGV: attempt. The heartbeat of a run: only while the job is running this attempt.
_TOUCH = _EMIT + """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' or stale(KEYS[1], '', ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'beat_at', now_s())
return 1
"""

# KEYS[5] = deadlines; ARGV: id, now, error JSON, channel. A queued job past its deadline ends aborted;
# any other job leaves the deadlines set (a running one is stopped by its worker's should_stop).
_ABORT_OVERDUE = _EMIT + """
local status = redis.call('HGET', KEYS[1], 'status')
local deadline = tonumber(redis.call('HGET', KEYS[1], 'deadline_at'))
if status == 'queued' and deadline and deadline > tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[5], ARGV[1])
if status ~= 'queued' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'aborted', 'finished_at', ARGV[2], 'error', ARGV[3])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[4], 'jobs_total:aborted', 1)
emit(KEYS[1], ARGV[4], 'status')
return 1
"""

# ARGV: channel, attempt ('' = any), then field/value pairs; only while running that attempt (progress,
# model, timings of the current attempt). A change of progress is an event.
_UPDATE_RUNNING = _EMIT + """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' or stale(KEYS[1], '', ARGV[2]) then return 0 end
local moved = false
for i = 3, #ARGV, 2 do
  if ARGV[i] == 'progress' and redis.call('HGET', KEYS[1], 'progress') ~= ARGV[i + 1] then moved = true end
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
if moved then emit(KEYS[1], ARGV[1], 'progress') end
return 1
"""

# Set fields of a record that exists (never recreates an expired one); ARGV: field/value pairs
_SET_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""


class JobStore:
    """Job records and the service's counters in one Redis database.

    The client answers ``str`` (:func:`connect`: ``decode_responses=True``); redis-py types every reply
    as ``bytes | str``, so the replies read here are cast to ``str``.
    """

    def __init__(self, client: redis.Redis, *, ttl_s: int) -> None:
        self.redis = client
        self.ttl_s = ttl_s
        self._start = client.register_script(_START)
        self._finish = client.register_script(_FINISH)
        self._cancel = client.register_script(_CANCEL)
        self._update_running = client.register_script(_UPDATE_RUNNING)
        self._requeue = client.register_script(_REQUEUE)
        self._resend = client.register_script(_RESEND)
        self._touch = client.register_script(_TOUCH)
        self._admit = admit_script(client)
        self._abort_overdue = client.register_script(_ABORT_OVERDUE)
        self._set_if_exists = client.register_script(_SET_IF_EXISTS)

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
        return {name: json.dumps(value) if name in _JSON_FIELDS else str(value)
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
            args += [name, json.dumps(value) if name in _JSON_FIELDS or name.startswith(_DELIVERY_PREFIX)
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
            args += [name, json.dumps(value) if name in _JSON_FIELDS else str(value)]
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
                    self._observe_durations(job_id, outcome, time.time())
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
