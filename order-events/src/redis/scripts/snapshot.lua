local position = '0-0'
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then position = info[i + 1] end
  end
end
local limit = tonumber(ARGV[2])
local budget = tonumber(ARGV[4])
local found = {}
local start = ARGV[1]
local last = false
local exhausted = false
while #found < 2 * limit and budget > 0 do
  local batch = redis.call('XREVRANGE', KEYS[1], start, '-', 'COUNT', math.min(budget, 200))
  if #batch == 0 then
    exhausted = true
    break
  end
  for _, entry in ipairs(batch) do
    if #found == 2 * limit then break end
    budget = budget - 1
    last = entry[1]
    local data, customer = nil, nil
    for i = 1, #entry[2], 2 do
      if entry[2][i] == 'data' then data = entry[2][i + 1] end
      if entry[2][i] == 'customer' then customer = entry[2][i + 1] end
    end
    if data and (ARGV[3] == '' or customer == ARGV[3]) then
      found[#found + 1] = entry[1]
      found[#found + 1] = data
    end
  end
  start = '(' .. last
end
if exhausted then last = false end
return {position, redis.call('GET', KEYS[2]), found, last}
