-- uses: job_lib
-- ARGV: channel, attempt ('' = any), then field/value pairs; only while running that attempt (progress,
-- model, timings of the current attempt). A change of progress is an event.
if redis.call('HGET', KEYS[1], 'status') ~= 'running' or stale(KEYS[1], '', ARGV[2]) then return 0 end
local moved = false
for i = 3, #ARGV, 2 do
  if ARGV[i] == 'progress' and redis.call('HGET', KEYS[1], 'progress') ~= ARGV[i + 1] then moved = true end
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
if moved then emit(KEYS[1], ARGV[1], 'progress') end
return 1
