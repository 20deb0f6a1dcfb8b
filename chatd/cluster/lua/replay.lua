-- History: KEYS: seq key, stream key, rewritten items key. ARGV: since ("" = none), limit.
-- Returns, as one JSON text, {last seq, rows newest first (at most limit + 1)}.
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if ARGV[1] == '' then return cjson.encode({last}) end
return cjson.encode({last, items_desc(KEYS[2], KEYS[3], nil, tonumber(ARGV[1]), tonumber(ARGV[2]) + 1)})
