-- Presence: a chatd.v1 connection of a user opened on this node (a name claim).
-- KEYS: nu:<node>, online, an:<user>. ARGV: user, exclusive ("1" for anonymous
-- names), epoch (the anonymous session's id). Returns 1 (CLAIMED) when the user is
-- registered on this node, 0 (TAKEN) when an exclusive name is online on another
-- node under another session (an:<user> is not epoch; the same session, whose
-- secret the connection gave, may hold it on several nodes), 2 (SUPERSEDED) when
-- it is registered but an:<user> (the session that last held the name, anywhere)
-- was not epoch.
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
local result = 1
if ARGV[2] == '1' then
  local last = redis.call('GET', KEYS[3])
  if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
    if last ~= ARGV[3] then return 0 end
  elseif last ~= ARGV[3] then
    result = 2
  end
  redis.call('SET', KEYS[3], ARGV[3])
end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return result
