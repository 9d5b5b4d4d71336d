-- The helpers every job script starts with (core.lua_scripts puts this file before each script whose
-- first line is `-- uses: job_lib`); ${EVENT_LOG_MAX} is core.jobs.EVENT_LOG_MAX.
-- In the job scripts KEYS[1] = the job hash, KEYS[2] = the queued set, KEYS[3] = the running set,
-- KEYS[4] = stats. Each script records a change with emit(): the job's seq is counted up, the event
-- appended to job:{id}:events (trimmed, same TTL as the job) and published on events:{id}
-- (ARGV[1] = job id).

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
  redis.call('LTRIM', log, -${EVENT_LOG_MAX}, -1)
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
