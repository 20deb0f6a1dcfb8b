-- Presence: ARGV: prefix, bus, node, n_members, members..., users...
-- Makes this node's registrations equal to what it really has (after a reconnect).
local p, bus, me = ARGV[1], ARGV[2], ARGV[3]
local n = tonumber(ARGV[4])
local want, users = {}, {}
for i = 5, 4 + n do want[ARGV[i]] = true end
for i = 5 + n, #ARGV do users[ARGV[i]] = true end
local nr, nu = p .. 'nr:' .. me, p .. 'nu:' .. me
for _, m in ipairs(redis.call('SMEMBERS', nr)) do
  if not want[m] then
    local ru = cjson.decode(m)
    local rm = p .. 'rm:{' .. ru[1] .. '}'
    redis.call('SREM', nr, m)
    if redis.call('HINCRBY', rm, ru[2], -1) <= 0 then
      redis.call('HDEL', rm, ru[2])
      redis.call('PUBLISH', bus, bus_presence(me, ru[1], ru[2], 'leave'))
    end
  else
    want[m] = nil
  end
end
for m, _ in pairs(want) do
  local ru = cjson.decode(m)
  redis.call('SADD', nr, m)
  if redis.call('HINCRBY', p .. 'rm:{' .. ru[1] .. '}', ru[2], 1) == 1 then
    redis.call('PUBLISH', bus, bus_presence(me, ru[1], ru[2], 'join'))
  end
end
for _, u in ipairs(redis.call('SMEMBERS', nu)) do
  if not users[u] then
    redis.call('SREM', nu, u)
    if redis.call('HINCRBY', p .. 'online', u, -1) <= 0 then redis.call('HDEL', p .. 'online', u) end
  else
    users[u] = nil
  end
end
for u, _ in pairs(users) do
  redis.call('SADD', nu, u)
  redis.call('HINCRBY', p .. 'online', u, 1)
end
return 1
