-- Presence: a user's last connection on this node closed.
-- KEYS: nu:<node>, online, an:<user>. ARGV: user, ms to keep an:<user> once the
-- user is offline everywhere (its session's resume grace; 0: none kept).
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 then
  if redis.call('HINCRBY', KEYS[2], ARGV[1], -1) <= 0 then
    redis.call('HDEL', KEYS[2], ARGV[1])
    if ARGV[2] ~= '0' then redis.call('PEXPIRE', KEYS[3], ARGV[2]) end
  end
end
return 1
