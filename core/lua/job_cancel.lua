-- uses: job_lib
-- ARGV: id, now, channel
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
