-- Moderation: append one entry to the queue or the audit log (chatd.store.redis).
-- KEYS: the id counter, the entries (hash id -> JSON), the index of all ids (zset),
--       the index of open ids (zset; '' for the audit log), the keys (hash key -> id;
--       '' for the audit log).
-- ARGV: the entry's JSON (without id and state), its key ('' for the audit log).
-- Returns {id, the stored JSON, 1 for a duplicate else 0}.
if KEYS[5] ~= '' and ARGV[2] ~= '' then
  local found = redis.call('HGET', KEYS[5], ARGV[2])
  if found then return {tonumber(found), redis.call('HGET', KEYS[2], found), 1} end
end
local id = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], id, ARGV[1])
redis.call('ZADD', KEYS[3], id, id)
if KEYS[4] ~= '' then redis.call('ZADD', KEYS[4], id, id) end
if KEYS[5] ~= '' and ARGV[2] ~= '' then redis.call('HSET', KEYS[5], ARGV[2], id) end
return {id, ARGV[1], 0}
