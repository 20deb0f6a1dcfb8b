-- Sync cursors: keep one snapshot. KEYS: cursor index zset cz:{user}, snapshot key
-- cs:{user}:<cursor>. ARGV: key prefix, user, cursor, snapshot, ts, ttl_ms, keep.
-- The newest keep cursors of the user are kept (each for ttl_ms).
redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[6])
-- scored by ts, and after every cursor saved before (the order they were saved in)
local score = tonumber(ARGV[5])
local top = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if top[2] and tonumber(top[2]) >= score then score = tonumber(top[2]) + 1 end
redis.call('ZADD', KEYS[1], score, ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
local keep = tonumber(ARGV[7])
local old = redis.call('ZRANGE', KEYS[1], 0, -(keep + 1))
for _, cursor in ipairs(old) do
  redis.call('DEL', ARGV[1] .. 'cs:{' .. ARGV[2] .. '}:' .. cursor)
end
if #old > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(keep + 1)) end
return #old
