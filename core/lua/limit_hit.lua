-- uses: gcra
-- KEYS[1] = the key's GCRA state; ARGV: limit per minute.
-- Returns {allowed, limit, remaining, retry_after_ms, reset_ms}.
local now = now_ms()
local limit = tonumber(ARGV[1])
local r = gcra(KEYS[1], now, limit, 60000, 1)
if r[1] == 1 then store_tat(KEYS[1], r[5], now) end
return {r[1], limit, r[2], r[3], r[4]}
