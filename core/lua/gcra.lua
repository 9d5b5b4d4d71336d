-- GCRA on Redis' own clock (TIME), so API processes on different hosts agree. Times in milliseconds.
-- Returns {allowed 0/1, remaining, retry_after_ms, reset_ms, new_tat}; writes nothing (the caller does).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function gcra(key, now, limit, period, cost)
  local interval = period / limit
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local new_tat = tat + cost * interval
  local allow_at = new_tat - period
  if now < allow_at then
    local remaining = math.max(0, math.floor((period - (tat - now)) / interval))
    return {0, remaining, math.ceil(allow_at - now), math.ceil(tat - now), tat}
  end
  local remaining = math.max(0, math.floor((period - (new_tat - now)) / interval))
  return {1, remaining, 0, math.ceil(new_tat - now), new_tat}
end

local function store_tat(key, tat, now)
  redis.call('SET', key, string.format('%d', math.ceil(tat)), 'PX', math.max(1, math.ceil(tat - now)))
end
