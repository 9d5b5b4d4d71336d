-- ARGV: when the job entered the queue as the caller saw it, min age (s). A queued job whose message
-- the caller found missing from the broker is given the next generation (returned; the caller sends
-- its message) unless it changed meanwhile (started, queued again by another reaper): then -1.
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return -1 end
local since = redis.call('HGET', KEYS[1], 'queued_at') or redis.call('HGET', KEYS[1], 'created_at')
if since ~= ARGV[1] then return -1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if now - tonumber(since) <= tonumber(ARGV[2]) then return -1 end
local generation = redis.call('HINCRBY', KEYS[1], 'generation', 1)
redis.call('HSET', KEYS[1], 'queued_at', now)
redis.call('HINCRBY', KEYS[2], 'resends_total', 1)
return generation
