-- Conversations: members with read_seq >= seq. KEYS: rd key, ms key. ARGV: seq,
-- limit. Returns, as one JSON text, {count, the first limit of them by user id}; a big room is
-- scanned by user id in pages, never loaded whole.
local count = redis.call('ZCOUNT', KEYS[1], ARGV[1], '+inf')
local limit = tonumber(ARGV[2])
local users = {}
if limit <= 0 or count == 0 then return cjson.encode({count, users}) end
local seq = tonumber(ARGV[1])
if count <= 1000 then
  users = redis.call('ZRANGEBYSCORE', KEYS[1], seq, '+inf')
  table.sort(users)
  while #users > limit do table.remove(users) end
  return cjson.encode({count, users})
end
local after = '-'
while #users < limit do
  local page = redis.call('ZRANGEBYLEX', KEYS[2], after, '+', 'LIMIT', 0, 500)
  if #page == 0 then break end
  local scores = redis.call('ZMSCORE', KEYS[1], unpack(page))
  for i, user in ipairs(page) do
    if scores[i] and tonumber(scores[i]) >= seq and #users < limit then users[#users + 1] = user end
  end
  after = '(' .. page[#page]
end
return cjson.encode({count, users})
