-- Conversations: move a read marker forward (never back, clamped to the newest seq).
-- KEYS: seq key. ARGV: key prefix, channel, user, seq, "1" under Redis Cluster.
-- Returns the marker after the call, or false when the user has no row (under
-- Redis Cluster wrapped by row_reply()).
local P, ch, user = ARGV[1], ARGV[2], ARGV[3]
row_split = ARGV[5] == '1'
local row = row_get(P, ch, user)
if not row then return row_reply(false) end
local seq = math.min(tonumber(ARGV[4]), tonumber(redis.call('GET', KEYS[1]) or '0'))
if seq > row[4] then
  row[4] = seq
  row_put(P, ch, user, row)
end
return row_reply(row[4])
