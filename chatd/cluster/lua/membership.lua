-- Presence: a user's first join / last leave of a room on this node; the
-- presence event (built by chatd/cluster/codec.py) is published when the user's
-- count of nodes in the room goes 0 -> 1 or 1 -> 0.
-- KEYS: nr:<node>, rm:{room}. ARGV: member, user, bus, payload, +1 / -1.
-- (Under Redis Cluster KEYS[1] is rn:{room}, the room's set of node memberships, and
-- the member JSON [node, user]: one slot, chatd/cluster/presence.py; ARGV 6 is then
-- SPUBLISH, the bus the room's shard channel.)
local publish = ARGV[6] or 'PUBLISH'
if ARGV[5] == '1' then
  if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
    if redis.call('HINCRBY', KEYS[2], ARGV[2], 1) == 1 then
      redis.call(publish, ARGV[3], ARGV[4])
    end
  end
else
  if redis.call('SREM', KEYS[1], ARGV[1]) == 1 then
    if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) <= 0 then
      redis.call('HDEL', KEYS[2], ARGV[2])
      redis.call(publish, ARGV[3], ARGV[4])
    end
  end
end
return 1
