-- Conversations under Redis Cluster: one channel of a user's conversation list (one
-- slot; chatd/store/redis.py reads uc:{user} first, then this per channel, pipelined).
-- KEYS: c:{ch}, mb:{ch}. ARGV: user. Returns, as one JSON text, {member row JSON or
-- false, last seq, last ts, room kind or false}: the row is the channel's own (the
-- copy in uc:{user} is an index that may lag).
local c = redis.call('HMGET', KEYS[1], 'seq', 'ts', 'kind')
local row = redis.call('HGET', KEYS[2], ARGV[1]) or false
return cjson.encode({row, tonumber(c[1] or '0'), tonumber(c[2] or '0'), c[3] or false})
