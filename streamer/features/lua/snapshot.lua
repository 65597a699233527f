-- A partition's model snapshot, replaced (streamer/features/store.py: write_partition_snapshot).
-- KEYS: owner, model. ARGV: key scheme and wire format, generation, ttl, then the snapshot's
-- chunks.
redis.call('DEL', KEYS[2])
redis.call('RPUSH', KEYS[2], unpack(ARGV, 4))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
return 1
