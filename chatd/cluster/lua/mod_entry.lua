-- Moderation: append one entry to the queue or the audit log (chatd.store.redis).
-- KEYS: the id counter, the entries (hash id -> JSON), the index of all ids (zset),
--       the index of open ids (zset; absent for the audit log), the keys (hash key ->
--       id; absent for the audit log). Every key shares one hash tag under Redis
--       Cluster (RedisNode.slot_prefix).
-- ARGV: the entry's JSON (without id and state), its key ('' for the audit log).
-- Returns {id, the stored JSON, 1 for a duplicate else 0}.
if KEYS[5] and ARGV[2] ~= '' then
  local found = redis.call('HGET', KEYS[5], ARGV[2])
  if found then
    local stored = redis.call('HGET', KEYS[2], found)
    -- an entry retention deleted (before keys had their '#id' twin): a new one
    if stored then return {tonumber(found), stored, 1} end
  end
end
local id = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], id, ARGV[1])
redis.call('ZADD', KEYS[3], id, id)
if KEYS[4] then redis.call('ZADD', KEYS[4], id, id) end
-- the key, and under '#id' the key of entry id (retention deletes both; a key always
-- holds a newline, so it is never of that form)
if KEYS[5] and ARGV[2] ~= '' then redis.call('HSET', KEYS[5], ARGV[2], id, '#' .. id, ARGV[2]) end
return {id, ARGV[1], 0}
