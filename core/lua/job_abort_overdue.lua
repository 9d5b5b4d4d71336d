-- uses: job_lib
-- KEYS[5] = deadlines; ARGV: id, now, error JSON, channel. A queued job past its deadline ends aborted;
-- any other job leaves the deadlines set (a running one is stopped by its worker's should_stop).
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
