-- uses: job_lib
-- ARGV: id, now, new status, channel, the run's fence (5: generation, 6: attempt; '' = not checked),
-- then field/value pairs to set. A fenced end of a run that is no longer current is 'superseded'.
-- A job whose cancel was requested ends 'canceled' whatever the worker reports (its fields are not
-- set): the cancel came before the result was committed, and the DELETE that set the flag said so.
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
