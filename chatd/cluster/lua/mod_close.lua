-- Moderation: close one open queue entry (chatd.store.redis); only one close wins.
-- KEYS: the entries (hash id -> JSON), the index of open ids (zset).
-- ARGV: id, the closed entry's JSON.
-- Returns 1 when it was open (and is closed now), else 0.
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
