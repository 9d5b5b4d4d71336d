-- uses: job_lib
-- ARGV: attempt. The heartbeat of a run: only while the job is running this attempt.
if redis.call('HGET', KEYS[1], 'status') ~= 'running' or stale(KEYS[1], '', ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'beat_at', now_s())
return 1
