-- History: commit one timeline item, apply its effect and publish it on the bus
-- (chatd/store/redis.py), all in one script.
-- KEYS: seq key, stream key, dedupe key (or the stream key again when no client id), channels
--       (absent under Redis Cluster: another slot; chatd/store/redis.py adds the channel)
-- ARGV: 1 sender, 2 name, 3 text, 4 ts, 5 client_id ("" = none), 6 maxlen (0 = none),
--       7 dedupe_ms, 8 bus channel ("" = do not publish), 9 payload head
--       (codec.committed_head), 10 channel, 11 key prefix,
--       12 kind ("" = "message"), 13 data JSON ("" = none; a reaction's with "on":true),
--       14 a reaction's data JSON with "on":false, 15 the effect (JSON, "" = none):
--       message {mentions, dm: [a, b]}; event {event, user, role, changes};
--       recalled/edited/reaction {target, by, emoji}, 16 "1": only look for the
--       dedupe record (reply "" when there is none; nothing is written), 17 "1": Redis
--       Cluster, the member rows' user-slot copies are returned (rows.lua, row_split),
--       18 the publish command ("" = PUBLISH; SPUBLISH on a Redis Cluster's shard channel)
-- Returns (one reply to parse) "<seq> <data JSON or nothing>", or for a duplicate the
-- JSON text {channel, seq, ts, the original item (item_row) or false}; under ARGV 17
-- either wrapped by row_reply().
local P, ch = ARGV[11], ARGV[10]
row_split = ARGV[17] == '1'
local tag = '{' .. ch .. '}'
local cid = ARGV[5]
if cid ~= '' then
  local orig = redis.call('GET', KEYS[3])
  if orig then
    local seq, ts, och = string.match(orig, '^(%d+) (%d+) (.*)$')
    local otag = '{' .. och .. '}'
    local fields = item_get(P .. 'm:' .. otag, P .. 'w:' .. otag, seq)
    local row = false
    if fields then row = item_row(seq, fields) end
    return row_reply(cjson.encode({och, tonumber(seq), tonumber(ts), row}))
  end
  if ARGV[16] == '1' then return row_reply('') end
end
local sender, text, ts = ARGV[1], ARGV[3], ARGV[4]
local kind = ARGV[12] or ''
if kind == '' then kind = 'message' end
local data = ARGV[13] or ''
local op = {}
if ARGV[15] and ARGV[15] ~= '' then op = cjson.decode(ARGV[15]) end
local m, w, o, c = KEYS[2], P .. 'w:' .. tag, P .. 'o:' .. tag, P .. 'c:' .. tag
local seq = redis.call('INCR', KEYS[1])
local maxlen = tonumber(ARGV[6])

-- the message ordinals o:{ch} cover the stream (the entries of an older chatd are
-- messages; those it trimmed are counted as trimmed ordinals)
if redis.call('HEXISTS', c, 'v') == 0 and seq > 1 then
  local rows = redis.call('XRANGE', m, '-', '+')
  for _, row in ipairs(rows) do
    local s = item_seq(row[1])
    redis.call('ZADD', o, s, s)
  end
  if rows[1] then redis.call('HSET', c, 'lm', item_seq(rows[#rows][1])) end
  local first = seq
  if rows[1] then first = item_seq(rows[1][1]) end
  if first > 1 then redis.call('HSET', c, 'tn', seq - 1 - #rows, 'tb', first - 1) end
end
redis.call('HSET', c, 'v', 1, 'ts', ts, 'seq', seq)

local function with_peer_rows(users)
  for _, user in ipairs(users) do
    if not row_get(P, ch, user) then
      local peer = users[1]
      if peer == user then peer = users[2] end
      -- the recipient's marker starts just before the message (0 on a new DM; on a DM
      -- of an older chatd with history, that history counts as read)
      local read = seq - 1
      if user == sender then read = seq end
      row_put(P, ch, user, row_new(P, user, 'member', 'member', peer, read, 0, ts))
    end
  end
end

local function apply_event()
  local user, event = op.user, op.event
  local row = row_get(P, ch, user)
  local room = P .. 'r:' .. tag
  if event == 'created' or event == 'room_updated' then
    local changes = op.changes or {}
    if redis.call('EXISTS', room) == 0 then
      redis.call('HSET', room, 'kind', 'public', 'title', '', 'topic', '', 'avatar', '', 'created_ts', 0)
    end
    for _, f in ipairs({'kind', 'title', 'topic', 'avatar'}) do
      if changes[f] ~= nil then redis.call('HSET', room, f, changes[f]) end
    end
    redis.call('HSET', c, 'kind', redis.call('HGET', room, 'kind'))
    if event == 'room_updated' then return end
    redis.call('HSET', room, 'created_by', user, 'created_ts', ts)
    op.role = 'owner'
    event = 'joined'
  end
  if not row then
    if event == 'role' then return end
    row = row_new(P, user, 'member', 'left', '', 0, seq, ts)
  end
  if event == 'joined' or event == 'invited' then
    row[1], row[2] = op.role or 'member', 'member'
    if op.role == cjson.null then row[1] = 'member' end
    if seq > row[4] then row[4] = seq end
  elseif event == 'left' or event == 'kicked' or event == 'banned' then
    row[2] = event
  elseif event == 'unbanned' then
    row[2] = 'left'
  elseif event == 'role' then
    if op.role and op.role ~= cjson.null then row[1] = op.role end
  else
    return
  end
  row[6] = seq
  row_put(P, ch, user, row)
end

local function is_message(fields)
  return fields and not field_get(fields, 'k')
end

-- a reaction toggles the sender's reaction: rx:{ch} target -> {emoji: {user: 1}}
if kind == 'reaction' then
  local rx = P .. 'rx:' .. tag
  local raw = redis.call('HGET', rx, op.target)
  local all = {}
  if raw then all = cjson.decode(raw) end
  local users = all[op.emoji] or {}
  if users[sender] then
    users[sender] = nil
    data = ARGV[14]
  else
    users[sender] = 1
  end
  if next(users) == nil then all[op.emoji] = nil else all[op.emoji] = users end
  if next(all) == nil then redis.call('HDEL', rx, op.target)
  else redis.call('HSET', rx, op.target, cjson.encode(all)) end
end

-- an edit of a recalled message keeps no text (the other stores' rule); the reply's
-- seq then ends with '~' so the caller knows
local blanked = ''
if kind == 'edited' then
  local tfields = item_get(m, w, tonumber(op.target))
  if tfields and field_get(tfields, 'er') then text = ''; blanked = '~' end
end

local cmd = {'XADD', m}
if maxlen > 0 then
  cmd[#cmd + 1] = 'MAXLEN'
  cmd[#cmd + 1] = maxlen
end
cmd[#cmd + 1] = '0-' .. seq
for _, v in ipairs({'s', sender, 'n', ARGV[2], 't', text, 'ts', ts}) do
  cmd[#cmd + 1] = v
end
if cid ~= '' then
  cmd[#cmd + 1] = 'c'
  cmd[#cmd + 1] = cid
  redis.call('SET', KEYS[3], seq .. ' ' .. ts .. ' ' .. ch, 'PX', ARGV[7])
end
if kind ~= 'message' then
  cmd[#cmd + 1] = 'k'
  cmd[#cmd + 1] = kind
end
if data ~= '' then
  cmd[#cmd + 1] = 'j'
  cmd[#cmd + 1] = data
end
redis.call(unpack(cmd))
if seq == 1 and KEYS[4] then redis.call('SADD', KEYS[4], ch) end

-- what falls out of the history window (XADD MAXLEN) goes with it: the seqs up to
-- floor leave the ordinals (counted), the rewritten items, the reactions, the edits
local floor = seq - maxlen
if maxlen > 0 and floor > 0 then
  ordinals_trim(o, c, floor)
  redis.call('ZREMRANGEBYSCORE', w, '-inf', floor)
  redis.call('HDEL', P .. 'rx:' .. tag, floor)
  redis.call('HDEL', P .. 'ed:' .. tag, floor)
end

if kind == 'message' then
  redis.call('ZADD', o, seq, seq)
  redis.call('HSET', c, 'lm', seq)
  local all = false
  for _, user in ipairs(op.mentions or {}) do
    if user == '@all' then all = true end
  end
  local targets = op.mentions or {}
  if all then targets = {'@all'} end
  for _, user in ipairs(targets) do
    local key = P .. 'mn:' .. tag .. ':' .. user
    if user == '@all' then key = P .. 'ma:' .. tag end
    if user ~= sender then
      redis.call('ZADD', key, seq, seq)
      if maxlen > 0 and floor > 0 then redis.call('ZREMRANGEBYSCORE', key, '-inf', floor) end
    end
  end
  if op.dm then with_peer_rows(op.dm) end
  local row = row_get(P, ch, sender)
  if row and seq > row[4] then
    row[4] = seq
    row_put(P, ch, sender, row)
  end
elseif kind == 'event' then
  apply_event()
elseif kind == 'recalled' or kind == 'edited' then
  local target = tonumber(op.target)
  local fields, in_stream = item_get(m, w, target)
  local ed = P .. 'ed:' .. tag
  if is_message(fields) and not field_get(fields, 'er') then
    if kind == 'recalled' then
      field_set(fields, 't', '')
      field_set(fields, 'er', '{"by":' .. cjson.encode(op.by or sender) .. ',"ts":' .. ts .. '}')
      item_put(m, w, target, fields, in_stream)
      -- a recalled mention no longer counts
      local tdata = field_get(fields, 'j')
      if tdata then
        local mentions = cjson.decode(tdata).mentions
        if type(mentions) == 'table' then
          for _, user in ipairs(mentions) do
            if type(user) == 'string' then
              redis.call('ZREM', P .. 'mn:' .. tag .. ':' .. user, target)
            end
          end
        end
        redis.call('ZREM', P .. 'ma:' .. tag, target)
      end
      for edit in string.gmatch(redis.call('HGET', ed, target) or '', '%d+') do
        local efields, e_in_stream = item_get(m, w, edit)
        if efields then
          field_set(efields, 't', '')
          item_put(m, w, edit, efields, e_in_stream)
        end
      end
    else
      field_set(fields, 't', text)
      field_set(fields, 'et', ts)
      item_put(m, w, target, fields, in_stream)
      local edits = redis.call('HGET', ed, target)
      if edits then edits = edits .. ' ' .. seq else edits = tostring(seq) end
      redis.call('HSET', ed, target, edits)
    end
  end
end

if ARGV[8] ~= '' then
  local publish = ARGV[18] or ''
  if publish == '' then publish = 'PUBLISH' end
  local cj = cjson.null
  if cid ~= '' then cj = cid end
  local message = {ch, seq, sender, ARGV[2], text, tonumber(ts), cj}
  if kind == 'message' and data == '' then
    redis.call(publish, ARGV[8], bus_committed(ARGV[9], message))
  else
    redis.call(publish, ARGV[8], bus_item(ARGV[9], message, kind, data))
  end
end
return row_reply(seq .. blanked .. ' ' .. data)
