-- History: KEYS: stream key, rewritten items key, message ordinals key, counters,
-- reactions, edits. ARGV: cutoff ts (ms), chunk. Deletes the prefix of entries older
-- than cutoff (at most chunk per call; rewritten items, ordinals, reactions and edits
-- below the first kept seq with them); returns {deleted, more}.
local rows = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', tonumber(ARGV[2]))
local keep = nil
local old = 0
for _, row in ipairs(rows) do
  local f = row[2]
  local ts = 0
  for i = 1, #f, 2 do if f[i] == 'ts' then ts = tonumber(f[i + 1]) end end
  if ts >= tonumber(ARGV[1]) then keep = row[1] break end
  old = old + 1
end
if old == 0 then return {0, 0} end
if keep == nil then
  local lastid = rows[#rows][1]
  local seq = tonumber(string.match(lastid, '%-(%d+)$'))
  keep = '0-' .. (seq + 1)
end
redis.call('XTRIM', KEYS[1], 'MINID', keep)
local floor = tonumber(string.match(keep, '%-(%d+)$')) - 1
local rewritten = redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', floor)
ordinals_trim(KEYS[3], KEYS[4], floor)
for _, key in ipairs({KEYS[5], KEYS[6]}) do
  for _, seq in ipairs(redis.call('HKEYS', key)) do
    if tonumber(seq) <= floor then redis.call('HDEL', key, seq) end
  end
end
if old == #rows then return {old + rewritten, 1} end
return {old + rewritten, 0}
