-- Conversations: complete summaries of some of the user's conversations.
-- KEYS: none (one slot per channel). ARGV: key prefix, user, channels...
-- Returns, as one JSON text, per channel where the user has a row {channel, member row JSON, last seq,
-- last ts, room kind or false, title or false, unread, mentions, newest message
-- row {id, fields} or false, the DM peer's row JSON or false}.
local P, user = ARGV[1], ARGV[2]
local out = {}
for i = 3, #ARGV do
  local ch = ARGV[i]
  local tag = '{' .. ch .. '}'
  local raw = redis.call('HGET', P .. 'mb:' .. tag, user)
  if raw then
    local row = cjson.decode(raw)
    local read = '(' .. row[4]
    local c = P .. 'c:' .. tag
    local last = redis.call('GET', P .. 's:' .. tag) or '0'
    local meta = redis.call('HMGET', c, 'ts', 'lm')
    local room = redis.call('HMGET', P .. 'r:' .. tag, 'kind', 'title')
    local unread = ordinals_unread(P .. 'o:' .. tag, c, row[4])
    local mentions = redis.call('ZCOUNT', P .. 'mn:' .. tag .. ':' .. user, read, '+inf')
      + redis.call('ZCOUNT', P .. 'ma:' .. tag, read, '+inf')
    local newest = false
    if meta[2] then
      local fields = item_get(P .. 'm:' .. tag, P .. 'w:' .. tag, meta[2])
      if fields then newest = {'0-' .. meta[2], fields} end
    end
    local peer = false
    if row[3] ~= '' then peer = redis.call('HGET', P .. 'mb:' .. tag, row[3]) or false end
    out[#out + 1] = {ch, raw, last, meta[1] or '0', room[1] or false, room[2] or false,
      unread, mentions, newest, peer}
  end
end
return cjson.encode(out)
