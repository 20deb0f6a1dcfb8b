-- Presence under Redis Cluster: a chatd.v1 connection of a user opened on a node (a
-- name claim), in the user's slot. KEYS: on:{user} (the set of nodes where the user
-- is online), an:{user}. ARGV: node, exclusive ("1" for anonymous names), epoch (the
-- anonymous session's id). Returns what connect.lua returns: 1 (CLAIMED), 0 (TAKEN:
-- an exclusive name online on another node under another session), 2 (SUPERSEDED:
-- an:{user} was not epoch).
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
local result = 1
if ARGV[2] == '1' then
  local last = redis.call('GET', KEYS[2])
  if redis.call('SCARD', KEYS[1]) > 0 then
    if last ~= ARGV[3] then return 0 end
  elseif last ~= ARGV[3] then
    result = 2
  end
  redis.call('SET', KEYS[2], ARGV[3])
end
redis.call('SADD', KEYS[1], ARGV[1])
return result
