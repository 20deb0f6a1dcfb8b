-- Known users: record one. KEYS: u:{user}. ARGV: name, ts (first seen, kept).
redis.call('HSET', KEYS[1], 'name', ARGV[1])
redis.call('HSETNX', KEYS[1], 'ts', ARGV[2])
return 1
