"""Per-key rate limit and quotas, and the admission of a job: each one Lua script in Redis.

Several API processes share the counters, and every decision is one script,
so no two requests can both pass a limit that only one of them fits under
(check-then-act). Limits are kept with GCRA (the generic cell rate algorithm:
one timestamp per limit, a burst of the whole allowance, refilled evenly), so
a refusal knows exactly when the next request would pass (``Retry-After``).

Its keys (``srgan:limit:{name}:...``, ``srgan:owner:{name}:...``) are ``core.keyspace``'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis
from redis.commands.core import Script

from core.keyspace import requests_key

# GCRA on Redis' own clock (TIME), so API processes on different hosts agree. Times in milliseconds.
# Returns {allowed 0/1, remaining, retry_after_ms, reset_ms, new_tat}; writes nothing (the caller does).
_GCRA = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function gcra(key, now, limit, period, cost)
  local interval = period / limit
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local new_tat = tat + cost * interval
  local allow_at = new_tat - period
  if now < allow_at then
    local remaining = math.max(0, math.floor((period - (tat - now)) / interval))
    return {0, remaining, math.ceil(allow_at - now), math.ceil(tat - now), tat}
  end
  local remaining = math.max(0, math.floor((period - (new_tat - now)) / interval))
  return {1, remaining, 0, math.ceil(new_tat - now), new_tat}
end

local function store_tat(key, tat, now)
  redis.call('SET', key, string.format('%d', math.ceil(tat)), 'PX', math.max(1, math.ceil(tat - now)))
end
"""

# KEYS[1] = the key's GCRA state; ARGV: limit per minute.
# Returns {allowed, limit, remaining, retry_after_ms, reset_ms}.
_HIT = _GCRA + """
local now = now_ms()
local limit = tonumber(ARGV[1])
local r = gcra(KEYS[1], now, limit, 60000, 1)
if r[1] == 1 then store_tat(KEYS[1], r[5], now) end
return {r[1], limit, r[2], r[3], r[4]}
"""

# Admission of a new job: every check, then every write, in one step.
# KEYS: 1 job hash, 2 global queued set, 3 stats, 4 owner's queued set, 5 owner's jobs, 6 owner's pixel GCRA,
#       7 the job's event log, 8 the deadlines sorted set
# ARGV: 1 job id, 2 max queued (global), 3 max queued for the key (0: none), 4 pixels per hour (0: none),
#       5 the job's input pixels, 6 ttl s, 7 job hash prefix, 8 the job's first event (JSON), 9 its events
#       channel, 10 its deadline (unix time; '' for none), then the record's field/value pairs.
# Returns {verdict, retry_after_ms, detail}: 'ok' | 'queue_full' | 'key_queue_full' | 'pixels' | 'pixels_never'
_ADMIT = _GCRA + """
local now = now_ms()
local max_key_queued = tonumber(ARGV[3])
local pixels_per_hour = tonumber(ARGV[4])
local pixels = tonumber(ARGV[5])
local ttl = tonumber(ARGV[6])

if max_key_queued > 0 then
  local mine = 0
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[4])) do
    if redis.call('HGET', ARGV[7] .. id, 'status') == 'queued' then
      mine = mine + 1
    else
      redis.call('SREM', KEYS[4], id)
    end
  end
  if mine >= max_key_queued then return {'key_queue_full', 10000, tostring(mine)} end
end

local pixel_tat = nil
if pixels_per_hour > 0 then
  if pixels > pixels_per_hour then return {'pixels_never', 0, tostring(pixels_per_hour)} end
  local r = gcra(KEYS[6], now, pixels_per_hour, 3600000, pixels)
  if r[1] == 0 then return {'pixels', r[3], tostring(r[2])} end
  pixel_tat = r[5]
end

local queued = redis.call('SCARD', KEYS[2])
if queued >= tonumber(ARGV[2]) then return {'queue_full', 10000, tostring(queued)} end

if pixel_tat then store_tat(KEYS[6], pixel_tat, now) end
for i = 11, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('DEL', KEYS[7])
redis.call('RPUSH', KEYS[7], ARGV[8])
redis.call('EXPIRE', KEYS[7], ttl)
redis.call('PUBLISH', ARGV[9], ARGV[8])
if ARGV[10] ~= '' then redis.call('ZADD', KEYS[8], tonumber(ARGV[10]), ARGV[1]) end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[3], 'jobs_total:queued', 1)
if max_key_queued > 0 then
  redis.call('SADD', KEYS[4], ARGV[1])
  redis.call('EXPIRE', KEYS[4], ttl)
end
redis.call('ZADD', KEYS[5], now / 1000, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', (now / 1000) - ttl)
redis.call('EXPIRE', KEYS[5], ttl)
return {'ok', 0, ''}
"""


@dataclass(frozen=True)
class RateDecision:
    """One request counted against a key's requests-per-minute limit."""

    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int
    reset_s: int

    def headers(self) -> dict[str, str]:
        """The ``RateLimit-*`` headers (IETF httpapi draft), plus ``Retry-After`` when refused."""
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
            "RateLimit-Policy": f"{self.limit};w=60",
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_s)
        return headers


@dataclass(frozen=True)
class JobLimits:
    """What one job admission is checked against (0: that limit is off)."""

    max_queued: int
    max_key_queued: int = 0
    pixels_per_hour: int = 0


class Refused(Exception):
    """A job was not admitted: ``code`` is ``queue_full`` or ``quota_exceeded``; retry after ``retry_after_s``."""

    def __init__(self, code: str, message: str, retry_after_s: int | None, status: int = 429) -> None:
        super().__init__(message)
        self.code, self.message, self.retry_after_s, self.status = code, message, retry_after_s, status


def _seconds(ms: int | float) -> int:
    return max(1, math.ceil(float(ms) / 1000))


class Limiter:
    """The per-key request limit: ``Limiter(client).hit(name, per_minute)``."""

    def __init__(self, client: redis.Redis) -> None:
        self._hit = client.register_script(_HIT)

    def hit(self, name: str, per_minute: int) -> RateDecision:
        allowed, limit, remaining, retry_ms, reset_ms = self._hit(keys=[requests_key(name)], args=[per_minute])
        return RateDecision(bool(allowed), int(limit), int(remaining), _seconds(retry_ms) if not allowed else 0,
                            math.ceil(int(reset_ms) / 1000))


def admit_script(client: redis.Redis) -> Script:
    return client.register_script(_ADMIT)


def refusal(verdict: str, retry_ms: int, detail: str, limits: JobLimits, pixels: int) -> Refused:
    """The error for a refused admission (see ``_ADMIT``'s verdicts)."""
    if verdict == "queue_full":
        return Refused("queue_full", f"{limits.max_queued} jobs are already waiting; try again later", 10)
    if verdict == "key_queue_full":
        return Refused("quota_exceeded", f"this API key already has {detail} queued jobs, its limit "
                       f"(key_max_queued_jobs={limits.max_key_queued}); try again when some have started", 10)
    if verdict == "pixels":
        return Refused("quota_exceeded", f"this image ({pixels} pixels) does not fit in what is left of this API "
                       f"key's hourly quota of {limits.pixels_per_hour} input pixels "
                       f"(key_max_pixels_per_hour); it will in {_seconds(retry_ms)} s", _seconds(retry_ms))
    if verdict == "pixels_never":
        return Refused("quota_exceeded", f"this image ({pixels} pixels) is larger than this API key's whole hourly "
                       f"quota of {limits.pixels_per_hour} input pixels (key_max_pixels_per_hour)", None, 422)
    raise ValueError(f"unknown admission verdict {verdict!r}")
