local now_ms = server_now_ms()
if now_ms > tonumber(ARGV[1]) then return expired(now_ms) end
ensure_epoch(KEYS[3], ARGV[7])
local id = redis.call('XADD', KEYS[1], '*', unpack(event_fields(ARGV[4], ARGV[5], ARGV[6])))
apply_retention(KEYS[1], KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[3]), now_ms)
return {'appended', id}
