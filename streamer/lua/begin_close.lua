-- The start of a bucket close's outputs (streamer/features.py: begin_close), before any
-- leaves: the caller still owns the partition (fence), the bucket is not recorded yet (a
-- retry whose first reply was lost, or a close recorded meanwhile, returns 0 and sends
-- nothing), and the LSTM version the close publishes with (0: none) is recorded, so a retry
-- of it after a crash uses the same one. KEYS: owner, clock. ARGV: prefix, generation,
-- bucket, version.
local recorded = tonumber(redis.call('HGET', KEYS[2], 'closed'))
if recorded and recorded >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[2], 'lstm_bucket', ARGV[3], 'lstm_version', ARGV[4])
return 1
