-- Conversations: the user's conversations, unsorted (chatd/store/redis.py sorts).
-- KEYS: none (uc:{user}, then c:{ch} of each channel: one slot per channel).
-- ARGV: key prefix, user. Returns, as one JSON text (one reply to parse), per
-- channel {channel, role, peer, read_seq, muted, last seq, last ts, room kind or false}.
local P, user = ARGV[1], ARGV[2]
local out = {}
local rows = redis.call('HGETALL', P .. 'uc:{' .. user .. '}')
for i = 1, #rows, 2 do
  local c = redis.call('HMGET', P .. 'c:{' .. rows[i] .. '}', 'seq', 'ts', 'kind')
  local row = cjson.decode(rows[i + 1])
  out[#out + 1] = {rows[i], row[1], row[3], row[4], row[5], tonumber(c[1] or '0'),
    tonumber(c[2] or '0'), c[3] or false}
end
return cjson.encode(out)
