-- The LSTM version a bucket close publishes with, recorded before its outputs leave
-- (streamer/features.py: pin_lstm). KEYS: owner, clock. ARGV: prefix, generation, bucket,
-- version (0: none).
redis.call('HSET', KEYS[2], 'lstm_bucket', ARGV[3], 'lstm_version', ARGV[4])
return 1
