-- Presence: reap(prefix, bus, node) removes a node's memberships and online
-- users and publishes the leaves (a helper, prepended to heartbeat and reap_self).
local function reap(p, bus, node)
  for _, m in ipairs(redis.call('SMEMBERS', p .. 'nr:' .. node)) do
    local ru = cjson.decode(m)
    local rm = p .. 'rm:{' .. ru[1] .. '}'
    if redis.call('HINCRBY', rm, ru[2], -1) <= 0 then
      redis.call('HDEL', rm, ru[2])
      redis.call('PUBLISH', bus, bus_presence(node, ru[1], ru[2], 'leave'))
    end
  end
  for _, u in ipairs(redis.call('SMEMBERS', p .. 'nu:' .. node)) do
    if redis.call('HINCRBY', p .. 'online', u, -1) <= 0 then redis.call('HDEL', p .. 'online', u) end
  end
  redis.call('DEL', p .. 'nr:' .. node, p .. 'nu:' .. node)
  redis.call('SREM', p .. 'nodes', node)
end
