-- History: commit one message and publish it on the bus (chatd/store/redis.py).
-- KEYS: seq key, stream key, dedupe key (or the stream key again when no client id), channels
-- ARGV: sender, name, text, ts, client_id ("" = none), maxlen (0 = none), dedupe_ms,
--       bus channel ("" = do not publish), payload head (codec.committed_head),
--       channel, key prefix
-- Returns {0, seq}, or {1, channel, seq, ts, name, text} of the original for a duplicate.
local cid = ARGV[5]
if cid ~= '' then
  local orig = redis.call('GET', KEYS[3])
  if orig then
    local seq, ts, ch = string.match(orig, '^(%d+) (%d+) (.*)$')
    local found = redis.call('XRANGE', ARGV[11] .. 'm:{' .. ch .. '}', '0-' .. seq, '0-' .. seq)
    local name, text = '', ''
    if found[1] then
      local f = found[1][2]
      for i = 1, #f, 2 do
        if f[i] == 'n' then name = f[i + 1] elseif f[i] == 't' then text = f[i + 1] end
      end
    end
    return {1, ch, tonumber(seq), tonumber(ts), name, text}
  end
end
local seq = redis.call('INCR', KEYS[1])
local id = '0-' .. seq
local maxlen = tonumber(ARGV[6])
local cmd = {'XADD', KEYS[2]}
if maxlen > 0 then
  cmd[#cmd + 1] = 'MAXLEN'
  cmd[#cmd + 1] = maxlen
end
cmd[#cmd + 1] = id
for _, v in ipairs({'s', ARGV[1], 'n', ARGV[2], 't', ARGV[3], 'ts', ARGV[4]}) do
  cmd[#cmd + 1] = v
end
if cid ~= '' then
  cmd[#cmd + 1] = 'c'
  cmd[#cmd + 1] = cid
  redis.call('SET', KEYS[3], seq .. ' ' .. ARGV[4] .. ' ' .. ARGV[10], 'PX', ARGV[7])
end
redis.call(unpack(cmd))
if seq == 1 then redis.call('SADD', KEYS[4], ARGV[10]) end
if ARGV[8] ~= '' then
  local c = cjson.null
  if cid ~= '' then c = cid end
  redis.call('PUBLISH', ARGV[8], bus_committed(ARGV[9],
    {ARGV[10], seq, ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), c}))
end
return {0, seq}
