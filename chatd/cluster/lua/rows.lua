-- Member rows, Lua half of chatd/store/redis.py (prepended to the scripts that
-- change them). mb:{ch} is a hash user -> cjson {role, state, peer ("" in rooms),
-- read_seq, muted (0/1), since_seq}; the rows in state "member" are also in
-- ms:{ch} (score 0: paged by user id), rd:{ch} (score read_seq) and, a copy of the
-- row, in the user's hash of conversations uc:{user} (channel -> row; another slot).
--
-- Under Redis Cluster a script may only touch its channel's slot: the script sets
-- row_split (from its ARGV) and the user-slot writes (uc:{user}, u:{user}) are
-- collected instead, returned by row_reply() and made by chatd/store/redis.py.

local row_split = false
local row_changes, row_users = {}, {}

-- The script's reply; under row_split the JSON text {reply, row changes
-- {channel, user, row JSON or false}, new users {user, ts}}.
local function row_reply(reply)
  if not row_split then return reply end
  return cjson.encode({reply, row_changes, row_users})
end

local function row_get(P, ch, user)
  local raw = redis.call('HGET', P .. 'mb:{' .. ch .. '}', user)
  if not raw then return nil end
  return cjson.decode(raw)
end

local function row_put(P, ch, user, row)
  local tag = '{' .. ch .. '}'
  local raw = cjson.encode(row)
  redis.call('HSET', P .. 'mb:' .. tag, user, raw)
  if row[2] == 'member' then
    redis.call('ZADD', P .. 'ms:' .. tag, 0, user)
    redis.call('ZADD', P .. 'rd:' .. tag, row[4], user)
  else
    redis.call('ZREM', P .. 'ms:' .. tag, user)
    redis.call('ZREM', P .. 'rd:' .. tag, user)
  end
  if row_split then
    local copy = false
    if row[2] == 'member' then copy = raw end
    row_changes[#row_changes + 1] = {ch, user, copy}
  elseif row[2] == 'member' then
    redis.call('HSET', P .. 'uc:{' .. user .. '}', ch, raw)
  else
    redis.call('HDEL', P .. 'uc:{' .. user .. '}', ch)
  end
end

-- A new row (the user becomes a known user too).
local function row_new(P, user, role, state, peer, read, since, ts)
  if row_split then
    row_users[#row_users + 1] = {user, tonumber(ts)}
  else
    redis.call('HSETNX', P .. 'u:{' .. user .. '}', 'ts', ts)
  end
  return {role, state, peer, read, 0, since}
end
