local function greater_decimal(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end

local function id_greater(a, b)
  local a_ms, a_seq = string.match(a, '^(%d+)-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)-(%d+)$')
  if not b_ms then return a_ms ~= nil end
  if not a_ms then return false end
  if a_ms ~= b_ms then return greater_decimal(a_ms, b_ms) end
  return greater_decimal(a_seq, b_seq)
end

local function server_now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

local function expired(now_ms)
  return {'expired', string.format('%.0f', now_ms)}
end

local function record_trimmed(marker, victim)
  local current = redis.call('GET', marker)
  if not current or id_greater(victim, current) then
    redis.call('SET', marker, victim)
  end
end

-- Count bound with 1 % slack (never less than one entry), at most 10000 entries per call so a
-- lowered bound shrinks the stream over several appends instead of in one long script.
-- Age bound: everything stamped before now - max_age.
local function apply_retention(stream, marker, max_len, max_age_ms, now_ms)
  if max_len > 0 then
    local excess = redis.call('XLEN', stream) - max_len
    if excess >= math.max(1, math.floor(max_len / 100)) then
      local victims = math.min(excess, 10000)
      local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', victims + 1)
      record_trimmed(marker, head[victims][1])
      redis.call('XTRIM', stream, 'MINID', head[victims + 1][1])
    end
  end
  if max_age_ms > 0 and now_ms > max_age_ms then
    -- Reading the oldest entry is cheap; the reverse search is not, so it runs only when
    -- something has actually expired.
    local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
    if #oldest == 0 or tonumber(string.match(oldest[1][1], '^(%d+)-')) >= now_ms - max_age_ms then
      return
    end
    local boundary = string.format('%.0f-0', now_ms - max_age_ms)
    local last = redis.call('XREVRANGE', stream, '(' .. boundary, '-', 'COUNT', 1)
    if #last > 0 then
      record_trimmed(marker, last[1][1])
      redis.call('XTRIM', stream, 'MINID', boundary)
    end
  end
end

-- A stream without an epoch gets one with its first entry (a new stream, or one recreated after
-- its history was lost together with the epoch).
local function ensure_epoch(key, candidate)
  if redis.call('EXISTS', key) == 0 then
    redis.call('SET', key, candidate)
  end
end

local function event_fields(data, customer, traceparent)
  local fields = {'data', data, 'customer', customer}
  if traceparent ~= '' then
    fields[5] = 'traceparent'
    fields[6] = traceparent
  end
  return fields
end
