-- Moderation: count one event of a user in a fixed window (the cluster-wide report
-- rate limit, chatd.modrules.report_window / report_count_allowed).
-- KEYS: rl:{user}:<what>:<window index> (the user's slot).
-- ARGV: the key's lifetime in ms (the window's length: it expires with its window).
-- Returns the count of this window, this event included.
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
