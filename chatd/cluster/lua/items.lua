-- Timeline items, Lua half of chatd/store/redis.py (prepended to the scripts that
-- read or rewrite them). A channel's items are entries of its stream m:{ch} (id
-- 0-<seq>, fields s n t ts [c] [k] [j] [et] [er]) until a recall or an edit rewrites
-- one: the entry is then deleted from the stream (XDEL: the old text is gone) and
-- kept in the zset w:{ch}, score seq, member "<seq> <cjson array of its fields>".

local function item_seq(id)
  return tonumber(string.match(id, '%-(%d+)$'))
end

local function item_decode(member)
  return cjson.decode(string.sub(member, string.find(member, ' ', 1, true) + 1))
end

-- The fields of item seq and whether they are in the stream (nil: no such item).
local function item_get(m, w, seq)
  local found = redis.call('XRANGE', m, '0-' .. seq, '0-' .. seq)
  if found[1] then return found[1][2], true end
  local over = redis.call('ZRANGEBYSCORE', w, seq, seq)
  if over[1] then return item_decode(over[1]), false end
  return nil, false
end

local function item_put(m, w, seq, fields, in_stream)
  if in_stream then redis.call('XDEL', m, '0-' .. seq) end
  redis.call('ZREMRANGEBYSCORE', w, seq, seq)
  redis.call('ZADD', w, seq, seq .. ' ' .. cjson.encode(fields))
end

local function field_get(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end

local function field_set(fields, name, value)
  for i = 1, #fields, 2 do
    if fields[i] == name then
      fields[i + 1] = value
      return
    end
  end
  fields[#fields + 1] = name
  fields[#fields + 1] = value
end

local function field_del(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then
      table.remove(fields, i)
      table.remove(fields, i)
      return
    end
  end
end

-- Message ordinals o:{ch} (the seqs of the channel's messages): drop those <= floor,
-- counting them in c:{ch} (tn: how many were dropped, tb: up to which seq), so
-- unread is never under-counted for a marker below the oldest kept one.
local function ordinals_trim(o, c, floor)
  local dropped = redis.call('ZREMRANGEBYSCORE', o, '-inf', floor)
  if dropped > 0 then
    redis.call('HINCRBY', c, 'tn', dropped)
    redis.call('HSET', c, 'tb', floor)
  end
end

-- Unread messages after read seq: the kept ordinals above it, plus at most the
-- dropped ones above it (tn of them, up to seq tb).
local function ordinals_unread(o, c, read)
  local unread = redis.call('ZCOUNT', o, '(' .. read, '+inf')
  local trimmed = redis.call('HMGET', c, 'tn', 'tb')
  if trimmed[1] and tonumber(trimmed[2]) > read then
    unread = unread + math.min(tonumber(trimmed[1]), tonumber(trimmed[2]) - read)
  end
  return unread
end

-- Items with bottom < seq < top (nil: unbounded), newest first, at most n, as
-- stream rows {id, fields}: the stream's and the rewritten ones merged.
local function items_desc(m, w, top, bottom, n)
  local xtop, xbottom, ztop, zbottom = '+', '-', '+inf', '-inf'
  if top then xtop, ztop = '(0-' .. top, '(' .. top end
  if bottom then xbottom, zbottom = '(0-' .. bottom, '(' .. bottom end
  local rows = redis.call('XREVRANGE', m, xtop, xbottom, 'COUNT', n)
  if n == 0 or redis.call('EXISTS', w) == 0 then return rows end
  local over = redis.call('ZREVRANGEBYSCORE', w, ztop, zbottom, 'WITHSCORES', 'LIMIT', 0, n)
  if #over == 0 then return rows end
  local merged, i, j = {}, 1, 1
  while #merged < n and (i <= #rows or j < #over) do
    local zseq = nil
    if j < #over then zseq = tonumber(over[j + 1]) end
    if i <= #rows and (not zseq or item_seq(rows[i][1]) > zseq) then
      merged[#merged + 1] = rows[i]
      i = i + 1
    else
      merged[#merged + 1] = {'0-' .. zseq, item_decode(over[j])}
      j = j + 2
    end
  end
  return merged
end
