-- Conversations: set a member row's muted flag. KEYS: mb:{ch} (for routing; the
-- user's copy in uc:{user} is another slot). ARGV: key prefix, channel, user, muted
-- (0/1), "1" under Redis Cluster. Returns 1, or 0: no row (under Redis Cluster wrapped
-- by row_reply()).
local P, ch, user = ARGV[1], ARGV[2], ARGV[3]
row_split = ARGV[5] == '1'
local row = row_get(P, ch, user)
if not row then return row_reply(0) end
row[5] = tonumber(ARGV[4])
row_put(P, ch, user, row)
return row_reply(1)
