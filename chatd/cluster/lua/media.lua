-- The media metadata of chatd.media.redismeta.RedisMeta (IMediaMeta), one script
-- for every operation. KEYS[1]: P media-posted (routing only). ARGV[1] is the key
-- prefix P, ARGV[2] the operation, the rest its arguments; the keys are built here
-- (see chatd/media/redismeta.py for what each holds). On a Redis Cluster P carries
-- the hash tag {media}, so every key built here is in KEYS[1]'s slot.
local P = ARGV[1]
local op = ARGV[2]
local function row_key(id) return P .. 'media:{' .. id .. '}' end
local function posts_key(id) return P .. 'media:{' .. id .. '}:posts' end
local function pending_key(id) return P .. 'media:{' .. id .. '}:pending' end
local function quota_key(user) return P .. 'media-quota:{' .. user .. '}' end
local function blob_key(key) return P .. 'media-blob:{' .. key .. '}' end
local function message_key(channel, seq) return P .. 'media-in:{' .. channel .. '}:' .. seq end
local UNPOSTED = P .. 'media-unposted'
local PENDING = P .. 'media-pending'
local POSTED = P .. 'media-posted'

local function used(owner, now, window)
  local total = 0
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', quota_key(owner), '(' .. (now - window), '+inf')) do
    total = total + tonumber(string.match(m, ':(%d+)$'))
  end
  return total
end

local function post(id, channel, seq)
  if redis.call('EXISTS', row_key(id)) == 0 then return end
  redis.call('SADD', posts_key(id), seq .. ' ' .. channel)
  redis.call('SADD', message_key(channel, seq), id)
  redis.call('SADD', POSTED, id)
  redis.call('ZREM', UNPOSTED, id)
end

local function unpend(token, id)
  redis.call('HDEL', pending_key(id), token)
  redis.call('ZREM', PENDING, token .. ' ' .. id)
end

local function split(m)  -- "<number> <rest>"
  return string.match(m, '^(%S+) (.*)$')
end

if op == 'used' then
  return used(ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]))
elseif op == 'record' then
  local quota, window = tonumber(ARGV[3]), tonumber(ARGV[4])
  local r, flat = {}, {}
  for i = 5, #ARGV, 2 do
    r[ARGV[i]] = ARGV[i + 1]
    flat[#flat + 1] = ARGV[i]
    flat[#flat + 1] = ARGV[i + 1]
  end
  local created, size = tonumber(r.created), tonumber(r.size)
  local qkey = quota_key(r.owner)
  redis.call('ZREMRANGEBYSCORE', qkey, '-inf', created - window)
  if quota > 0 and used(r.owner, created, window) + size > quota then return 'quota' end
  redis.call('HSET', row_key(r.id), unpack(flat))
  redis.call('ZADD', qkey, created, r.id .. ':' .. size)
  redis.call('ZADD', UNPOSTED, created, r.id)
  redis.call('SADD', blob_key(r.sha256), r.id)
  if r.thumb_sha256 then redis.call('SADD', blob_key(r.thumb_sha256), r.id) end
  return 'ok'
elseif op == 'ready' then
  if redis.call('EXISTS', row_key(ARGV[3])) == 1 then
    redis.call('HSET', row_key(ARGV[3]), 'ready', '1')
  end
  return 'ok'
elseif op == 'rows' then
  local out = {}
  for i = 3, #ARGV do out[#out + 1] = redis.call('HGETALL', row_key(ARGV[i])) end
  return out
elseif op == 'claim' then
  local owner, token, channel, now = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  local out = {}
  for i = 7, #ARGV do
    local id = ARGV[i]
    local k = row_key(id)
    local r = redis.call('HMGET', k, 'owner', 'ready')
    if r[1] == owner and r[2] == '1' then
      redis.call('HSET', k, 'attached', now)
      redis.call('HSET', pending_key(id), token, now .. ' ' .. channel)
      redis.call('ZADD', PENDING, now, token .. ' ' .. id)
      if redis.call('ZSCORE', UNPOSTED, id) then redis.call('ZADD', UNPOSTED, now, id) end
    end
    out[#out + 1] = redis.call('HGETALL', k)
  end
  return out
elseif op == 'posted' then
  local token, channel, seq, n = ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
  for i = 7 + n, #ARGV do post(ARGV[i], channel, seq) end
  for i = 7, 6 + n do unpend(token, ARGV[i]) end
  return 'ok'
elseif op == 'release' then
  for i = 4, #ARGV do unpend(ARGV[3], ARGV[i]) end
  return 'ok'
elseif op == 'pending_before' then
  local out = {}
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', PENDING, '-inf', ARGV[3])) do
    local token, id = split(m)
    local v = redis.call('HGET', pending_key(id), token)
    if v then
      local at, channel = split(v)
      out[#out + 1] = {token, id, channel, at}
    else
      redis.call('ZREM', PENDING, m)
    end
  end
  return out
elseif op == 'resolve' then
  if ARGV[6] ~= '' then post(ARGV[4], ARGV[5], ARGV[6]) end
  unpend(ARGV[3], ARGV[4])
  return 'ok'
elseif op == 'channels' then
  local out = {}
  for _, m in ipairs(redis.call('SMEMBERS', posts_key(ARGV[3]))) do
    local _, channel = split(m)
    out[#out + 1] = channel
  end
  for _, v in ipairs(redis.call('HVALS', pending_key(ARGV[3]))) do
    local _, channel = split(v)
    out[#out + 1] = channel
  end
  return out
elseif op == 'posts' then
  local out = {}
  for i = 3, #ARGV do
    for _, m in ipairs(redis.call('SMEMBERS', posts_key(ARGV[i]))) do
      local seq, channel = split(m)
      out[#out + 1] = {ARGV[i], channel, seq}
    end
  end
  return out
elseif op == 'drop' then
  for i = 3, #ARGV, 3 do
    local id, channel, seq = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    redis.call('SREM', posts_key(id), seq .. ' ' .. channel)
    redis.call('SREM', message_key(channel, seq), id)
    if redis.call('SCARD', posts_key(id)) == 0 then
      redis.call('SREM', POSTED, id)
      local r = redis.call('HMGET', row_key(id), 'created', 'attached')
      if r[1] then
        redis.call('ZADD', UNPOSTED, math.max(tonumber(r[1]), tonumber(r[2] or 0)), id)
      end
    end
  end
  return 'ok'
elseif op == 'unposted' then
  local cutoff = tonumber(ARGV[3])
  local out = {}
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', UNPOSTED, '-inf', ARGV[3])) do
    local r = redis.call('HMGET', row_key(id), 'created', 'attached')
    if not r[1] then
      redis.call('ZREM', UNPOSTED, id)
    elseif redis.call('SCARD', posts_key(id)) == 0 and redis.call('HLEN', pending_key(id)) == 0
      and tonumber(r[1]) <= cutoff and tonumber(r[2] or 0) <= cutoff then
      out[#out + 1] = {id, r[1], r[2] or '0'}
    end
  end
  return out
elseif op == 'remove' then
  local id = ARGV[3]
  local k = row_key(id)
  local r = redis.call('HMGET', k, 'sha256', 'thumb_sha256', 'created', 'attached', 'owner', 'size')
  if not r[1] then return {'removed'} end
  local posts = redis.call('SMEMBERS', posts_key(id))
  if ARGV[4] == '1' then
    if ARGV[5] ~= '' and math.max(tonumber(r[3]), tonumber(r[4] or 0)) > tonumber(ARGV[5]) then
      return {'kept'}
    end
    if redis.call('HLEN', pending_key(id)) > 0 then return {'kept'} end
    local seen = {}
    for i = 6, #ARGV do seen[ARGV[i]] = true end
    for _, m in ipairs(posts) do
      if not seen[m] then return {'kept'} end
    end
  end
  for _, m in ipairs(posts) do
    local seq, channel = split(m)
    redis.call('SREM', message_key(channel, seq), id)
  end
  for _, token in ipairs(redis.call('HKEYS', pending_key(id))) do
    redis.call('ZREM', PENDING, token .. ' ' .. id)
  end
  redis.call('DEL', k, posts_key(id), pending_key(id))
  redis.call('ZREM', UNPOSTED, id)
  redis.call('SREM', POSTED, id)
  redis.call('ZREM', quota_key(r[5]), id .. ':' .. r[6])
  local out = {'removed'}
  for _, key in ipairs({r[1], r[2]}) do
    if key and key ~= '' then
      redis.call('SREM', blob_key(key), id)
      if redis.call('SCARD', blob_key(key)) == 0 and key ~= out[#out] then
        out[#out + 1] = key
      end
    end
  end
  return out
end
return redis.error_reply('unknown media operation ' .. tostring(op))
