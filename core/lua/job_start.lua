-- uses: job_lib
-- ARGV[7] = the deadline_exceeded error JSON: a job whose deadline passed ends aborted (never started)
-- or canceled (a redelivery of a job that was running). ARGV[8] = the message's generation: an older
-- message than the job's (it was queued again since) is superseded and changes nothing.
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
