-- History: KEYS: stream key. ARGV: before ("" = newest), limit.
local top = '+'
if ARGV[1] ~= '' then
  if tonumber(ARGV[1]) <= 1 then return {} end
  top = '(0-' .. ARGV[1]
end
return redis.call('XREVRANGE', KEYS[1], top, '-', 'COUNT', tonumber(ARGV[2]) + 1)
