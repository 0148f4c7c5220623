local entries = false
if ARGV[3] == '1' then
  entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
end
local held = #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) > 0
local before = false
if not held then
  local newest = redis.call('XREVRANGE', KEYS[1], ARGV[1], '-', 'COUNT', 1)
  if #newest > 0 then before = newest[1][1] end
end
return {redis.call('GET', KEYS[2]), entries, redis.call('GET', KEYS[3]), held and 1 or 0, before}
