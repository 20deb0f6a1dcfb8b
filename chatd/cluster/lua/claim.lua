-- History under Redis Cluster: claim a client id for a channel (the first half of an
-- exactly-once send; the channel's own dedupe record, in append.lua, is the second).
-- KEYS: the sender's claim key d:{sender}:["sender","client id"]. ARGV: channel,
-- ttl_ms, a channel whose claim may be replaced ("" = none: its send never committed).
-- Returns the channel that holds the id: ARGV 1 when this call claimed it.
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[3] then return held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
