-- History: KEYS: seq key, stream key, rewritten items key. ARGV: since ("" = none), limit.
-- Returns {last seq, rows newest first (at most limit + 1)}.
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if ARGV[1] == '' then return {last, {}} end
return {last, items_desc(KEYS[2], KEYS[3], nil, tonumber(ARGV[1]), tonumber(ARGV[2]) + 1)}
