-- Conversations: the user's conversations, unsorted (chatd/store/redis.py sorts).
-- KEYS: none (keys of every channel of the user: one slot per channel).
-- ARGV: key prefix, user. Returns per channel {channel, member row JSON, last seq,
-- last ts, room kind or false}.
local P, user = ARGV[1], ARGV[2]
local out = {}
for _, ch in ipairs(redis.call('SMEMBERS', P .. 'uc:{' .. user .. '}')) do
  local tag = '{' .. ch .. '}'
  local row = redis.call('HGET', P .. 'mb:' .. tag, user)
  if row then
    local last = redis.call('GET', P .. 's:' .. tag) or '0'
    local ts = redis.call('HGET', P .. 'c:' .. tag, 'ts') or '0'
    local kind = redis.call('HGET', P .. 'r:' .. tag, 'kind') or false
    out[#out + 1] = {ch, row, last, ts, kind}
  end
end
return out
