-- Conversations: set a member row's muted flag. KEYS: none (the channel's and the
-- user's slots). ARGV: key prefix, channel, user, muted (0/1). Returns 1, or 0: no row.
local P, ch, user = ARGV[1], ARGV[2], ARGV[3]
local row = row_get(P, ch, user)
if not row then return 0 end
row[5] = tonumber(ARGV[4])
row_put(P, ch, user, row)
return 1
