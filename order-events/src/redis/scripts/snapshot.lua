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
-- The page's last entry, the last entry scanned, and whether a match lies past a full page.
local page_last = false
local scanned = false
local more = false
local exhausted = false
while not more and budget > 0 do
  local batch = redis.call('XREVRANGE', KEYS[1], start, '-', 'COUNT', math.min(budget, 200))
  if #batch == 0 then
    exhausted = true
    break
  end
  for _, entry in ipairs(batch) do
    budget = budget - 1
    scanned = entry[1]
    local data, customer = nil, nil
    for i = 1, #entry[2], 2 do
      if entry[2][i] == 'data' then data = entry[2][i + 1] end
      if entry[2][i] == 'customer' then customer = entry[2][i + 1] end
    end
    if data and (ARGV[3] == '' or customer == ARGV[3]) then
      if #found == 2 * limit then
        more = true
        break
      end
      found[#found + 1] = entry[1]
      found[#found + 1] = data
      page_last = entry[1]
    end
  end
  start = '(' .. scanned
end
-- A full page with a match past it continues after its last entry; a scan that ran out of
-- budget first continues after what it scanned (more may be older); otherwise there is no more.
local last = false
if more then
  last = page_last
elseif not exhausted and budget <= 0 then
  last = scanned
end
return {position, redis.call('GET', KEYS[2]), found, last}
