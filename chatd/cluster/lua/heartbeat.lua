-- Presence: ARGV: prefix, bus, node, ttl_ms. Refreshes this node's heartbeat and
-- reaps every node whose heartbeat expired; returns {1 if this node's heartbeat
-- was still alive else 0, reaped node ids}.
local p, bus, me = ARGV[1], ARGV[2], ARGV[3]
local alive = redis.call('EXISTS', p .. 'hb:' .. me)
redis.call('SET', p .. 'hb:' .. me, '1', 'PX', ARGV[4])
redis.call('SADD', p .. 'nodes', me)
local reaped = {}
for _, node in ipairs(redis.call('SMEMBERS', p .. 'nodes')) do
  if node ~= me and redis.call('EXISTS', p .. 'hb:' .. node) == 0 then
    reap(p, bus, node)
    reaped[#reaped + 1] = node
  end
end
return {alive, reaped}
