-- uses: gcra
-- Admission of a new job: every check, then every write, in one step.
-- KEYS: 1 job hash, 2 global queued set, 3 stats, 4 owner's queued set, 5 owner's jobs, 6 owner's pixel GCRA,
--       7 the job's event log, 8 the deadlines sorted set
-- ARGV: 1 job id, 2 max queued (global), 3 max queued for the key (0: none), 4 pixels per hour (0: none),
--       5 the job's input pixels, 6 ttl s, 7 job hash prefix, 8 the job's first event (JSON), 9 its events
--       channel, 10 its deadline (unix time; '' for none), then the record's field/value pairs.
-- Returns {verdict, retry_after_ms, detail}: 'ok' | 'queue_full' | 'key_queue_full' | 'pixels' | 'pixels_never'
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
