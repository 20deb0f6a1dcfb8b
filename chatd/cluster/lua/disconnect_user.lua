-- Presence under Redis Cluster: a user's last connection on a node closed (or the node
-- was reaped), in the user's slot. KEYS: on:{user}, an:{user}. ARGV: node, ms to keep
-- an:{user} once the user is offline everywhere (0: none kept).
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 0 then
  if ARGV[2] ~= '0' then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
end
return 1
