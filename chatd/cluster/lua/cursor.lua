-- Sync cursors: keep one snapshot. KEYS: cursor index zset cz:{user}, snapshot key
-- cs:{user}:<cursor>. ARGV: key prefix, user, cursor, snapshot, ts, ttl_ms, keep.
-- The newest keep cursors of the user are kept, each for ttl_ms (by the key's TTL,
-- and by ts: a save drops the cursors saved more than ttl_ms before it).
redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[6])
-- scored by ts, and after every cursor saved before (the order they were saved in)
local score = tonumber(ARGV[5])
local top = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if top[2] and tonumber(top[2]) >= score then score = tonumber(top[2]) + 1 end
redis.call('ZADD', KEYS[1], score, ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
local keep = tonumber(ARGV[7])
local expired = '(' .. (tonumber(ARGV[5]) - tonumber(ARGV[6]))
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', expired)
for _, cursor in ipairs(redis.call('ZRANGE', KEYS[1], 0, -(keep + 1))) do
  old[#old + 1] = cursor
end
for _, cursor in ipairs(old) do
  redis.call('DEL', ARGV[1] .. 'cs:{' .. ARGV[2] .. '}:' .. cursor)
  redis.call('ZREM', KEYS[1], cursor)
end
return #old
