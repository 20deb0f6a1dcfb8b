-- History: KEYS: seq key, stream key. ARGV: since ("" = none), limit.
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if ARGV[1] == '' then return {last, {}} end
local n = tonumber(ARGV[2]) + 1
local rows = redis.call('XREVRANGE', KEYS[2], '+', '(0-' .. ARGV[1], 'COUNT', n)
return {last, rows}
