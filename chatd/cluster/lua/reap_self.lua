-- Presence: ARGV: prefix, bus, node. A node leaving the cluster (clean shutdown).
reap(ARGV[1], ARGV[2], ARGV[3])
redis.call('DEL', ARGV[1] .. 'hb:' .. ARGV[3])
return 1
