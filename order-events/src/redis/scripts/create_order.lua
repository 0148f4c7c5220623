local now_ms = server_now_ms()
if now_ms > tonumber(ARGV[1]) then return expired(now_ms) end
if ARGV[7] == '1' then
  local seen = redis.call('GET', KEYS[4])
  if seen then
    local fingerprint, order_id = string.match(seen, '^(%S+) (%S+)$')
    if fingerprint ~= ARGV[8] then return {'conflict'} end
    local original = redis.call('HMGET', ARGV[11] .. order_id, 'order', 'eventId')
    if original[1] and original[2] then return {'replayed', original[1], original[2]} end
    -- The original order is gone (deleted by hand): this request creates it anew.
  end
end
ensure_epoch(KEYS[5], ARGV[12])
local id = redis.call('XADD', KEYS[1], '*', unpack(event_fields(ARGV[4], ARGV[5], ARGV[6])))
redis.call('HSET', KEYS[3], 'order', ARGV[4], 'eventId', id)
if ARGV[7] == '1' then
  local record = ARGV[8] .. ' ' .. ARGV[10]
  if tonumber(ARGV[9]) > 0 then
    redis.call('SET', KEYS[4], record, 'PX', ARGV[9])
  else
    redis.call('SET', KEYS[4], record)
  end
end
apply_retention(KEYS[1], KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[3]), now_ms)
return {'created', id}
