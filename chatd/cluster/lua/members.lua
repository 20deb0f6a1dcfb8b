-- Conversations: one page of a channel's members, ascending by user id.
-- KEYS: ms key, mb key. ARGV: after ("" = from the first), limit.
-- Returns, as one JSON text, {user, row JSON, user, row JSON, ...} (at most limit + 1
-- users).
local after = '-'
if ARGV[1] ~= '' then after = '(' .. ARGV[1] end
local users = redis.call('ZRANGEBYLEX', KEYS[1], after, '+', 'LIMIT', 0, tonumber(ARGV[2]) + 1)
if #users == 0 then return '[]' end
local rows = redis.call('HMGET', KEYS[2], unpack(users))
local out = {}
for i, user in ipairs(users) do
  out[#out + 1] = user
  out[#out + 1] = rows[i] or false
end
return cjson.encode(out)
