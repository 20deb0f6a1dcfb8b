-- Offline push: claim one notification (the Lua half of chatd.pushrules.claim).
-- KEYS: pd:{user} (hash channel -> ms of the last notification), pq:{user}.
-- ARGV: channel, template ('' for none), now ms, interval ms.
-- Returns 0 (no notification), 1 (notify, no quota taken), 2 (notify, one taken).
local last = redis.call('HGET', KEYS[1], ARGV[1])
local now = tonumber(ARGV[3])
if last and now - tonumber(last) < tonumber(ARGV[4]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], now)
if ARGV[2] == '' then return 1 end
local left = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
if left <= 0 then return 1 end
redis.call('HSET', KEYS[2], ARGV[2], left - 1)
return 2
