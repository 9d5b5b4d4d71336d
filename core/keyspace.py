"""Every Redis key and channel of the service, under one prefix (Celery's own broker keys aside).

Jobs (``core.jobs``; their moves: ``core.job_states``)::

    srgan:job:{id}                hash: the record, EXPIRE = job_ttl_s
    srgan:job:{id}:events         list: the job's last events (``Last-Event-ID`` resumes from it), same TTL
    srgan:events:{id}             pub/sub channel: each change of the job, as JSON
    srgan:jobs:queued             set of ids waiting for a worker (gauges, the queue limit)
    srgan:jobs:running            set of ids being worked on
    srgan:deadlines               sorted set: id -> deadline (unix time) of queued jobs that have one
    srgan:stats                   hash of counters and histogram buckets for /metrics
    srgan:workers                 sorted set: worker name -> last heartbeat (unix time) (``core.workers``)
    srgan:reaper                  lock: held by the process whose reaper pass runs now (``core.recovery``)
    srgan:throughput              hash: model|worker -> measured input pixels/s (``core.throughput``)

Callers (API keys; ``{name}`` is a key's name, never the key; ``core.limits``, ``core.idempotency``)::

    srgan:limit:{name}:requests   GCRA state of the requests-per-minute limit (PX: until refilled)
    srgan:limit:{name}:pixels     GCRA state of the input-pixels-per-hour quota
    srgan:owner:{name}:queued     set of the key's job ids that may still be queued (pruned at each admission)
    srgan:owner:{name}:jobs       sorted set: the key's job ids by creation time (listing; pruned after job_ttl_s)
    srgan:idempotency:{name}:{h}  the job or batch an Idempotency-Key (sha256 ``h``) was first used for
    srgan:batch:{id}              hash: a batch's job ids and owner (``core.batches``)
    srgan:link-secret             the key signed result links are made with (``core.links``)

Models (``core.catalog.announce``)::

    srgan:models:generation       counter, incremented by every change of an active version
    srgan:models:active           hash: model name -> active version (for people and dashboards)
    srgan:models:changed          pub/sub channel: {"name", "version", "generation"} of each change
    srgan:models:engines          hash: name:version -> the engine a worker last loaded for it
"""

from __future__ import annotations

PREFIX = "srgan:"

# --- jobs ------------------------------------------------------------------------
QUEUED_SET = PREFIX + "jobs:queued"
RUNNING_SET = PREFIX + "jobs:running"
STATS = PREFIX + "stats"
WORKERS = PREFIX + "workers"
DEADLINES = PREFIX + "deadlines"
EVENTS_CHANNEL_PREFIX = PREFIX + "events:"
EVENTS_PATTERN = EVENTS_CHANNEL_PREFIX + "*"
REAPER_LOCK = PREFIX + "reaper"
THROUGHPUT = PREFIX + "throughput"


def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def events_channel(job_id: str) -> str:
    return f"{EVENTS_CHANNEL_PREFIX}{job_id}"


def events_log_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}:events"


# --- callers -----------------------------------------------------------------------
LINK_SECRET = PREFIX + "link-secret"


def requests_key(name: str) -> str:
    return f"{PREFIX}limit:{name}:requests"


def pixels_key(name: str) -> str:
    return f"{PREFIX}limit:{name}:pixels"


def owner_queued_key(name: str) -> str:
    return f"{PREFIX}owner:{name}:queued"


def owner_jobs_key(name: str) -> str:
    return f"{PREFIX}owner:{name}:jobs"


def idempotency_key(owner: str, key_sha256: str) -> str:
    return f"{PREFIX}idempotency:{owner}:{key_sha256}"


def batch_key(batch_id: str) -> str:
    return f"{PREFIX}batch:{batch_id}"


# --- models ------------------------------------------------------------------------
MODELS_GENERATION = PREFIX + "models:generation"
MODELS_ACTIVE = PREFIX + "models:active"
MODELS_CHANGED = PREFIX + "models:changed"
MODELS_ENGINES = PREFIX + "models:engines"
