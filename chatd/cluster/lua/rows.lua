-- Member rows, Lua half of chatd/store/redis.py (prepended to the scripts that
-- change them). mb:{ch} is a hash user -> cjson {role, state, peer ("" in rooms),
-- read_seq, muted (0/1), since_seq}; the rows in state "member" are also in
-- ms:{ch} (score 0: paged by user id), rd:{ch} (score read_seq) and, a copy of the
-- row, in the user's hash of conversations uc:{user} (channel -> row; another slot).

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
    redis.call('HSET', P .. 'uc:{' .. user .. '}', ch, raw)
  else
    redis.call('ZREM', P .. 'ms:' .. tag, user)
    redis.call('ZREM', P .. 'rd:' .. tag, user)
    redis.call('HDEL', P .. 'uc:{' .. user .. '}', ch)
  end
end

-- A new row (the user becomes a known user too).
local function row_new(P, user, role, state, peer, read, since, ts)
  redis.call('HSETNX', P .. 'u:{' .. user .. '}', 'ts', ts)
  return {role, state, peer, read, 0, since}
end
