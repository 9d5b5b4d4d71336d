-- uses: job_lib
-- KEYS[5] = deadlines; ARGV: id, max silence (s), max attempts, attempts_exhausted error JSON, channel.
-- A running job whose run sent no heartbeat (nor started) for over ARGV[2] seconds of Redis time is
-- presumed lost with its worker: it is queued again with the next generation (returns {1, generation};
-- the caller sends its message), or ends failed when its attempts are used ({2, 0}), or canceled when
-- its cancel was requested ({3, 0}). One script with _START, _FINISH and _TOUCH: a run that beats or
-- ends at the same moment either comes first (and the job is left alone) or finds itself superseded;
-- a second reaper finds the job queued and leaves it alone.
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
