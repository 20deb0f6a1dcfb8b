-- Offline push: add accepted one-time messages and set the notify rooms of one user
-- (the Lua half of chatd.pushrules.subscribe). KEYS: pq:{user} (hash template ->
-- messages left), pr:{user} (set of rooms). ARGV: quota max, rooms max, the number
-- of templates n, then n pairs template, count, then pairs room, 1/0.
-- Returns JSON [{template: count left > 0}, [rooms]].
local qmax, rmax, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local i = 4
for _ = 1, n do
    local left = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
    local add = math.max(0, tonumber(ARGV[i + 1]))
    redis.call('HSET', KEYS[1], ARGV[i], math.min(qmax, left + add))
    i = i + 2
end
while ARGV[i] do
    local room, on = ARGV[i], ARGV[i + 1]
    if on == '0' then
        redis.call('SREM', KEYS[2], room)
    elseif redis.call('SISMEMBER', KEYS[2], room) == 0 and redis.call('SCARD', KEYS[2]) < rmax then
        redis.call('SADD', KEYS[2], room)
    end
    i = i + 2
end
local templates = {}
local flat = redis.call('HGETALL', KEYS[1])
for j = 1, #flat, 2 do
    if tonumber(flat[j + 1]) > 0 then templates[flat[j]] = tonumber(flat[j + 1]) end
end
local rooms = redis.call('SMEMBERS', KEYS[2])
table.sort(rooms)
if next(templates) == nil then templates = cjson.null end
return cjson.encode({templates, rooms})
