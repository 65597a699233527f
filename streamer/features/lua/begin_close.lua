-- The start of a bucket close's outputs (streamer/features/store.py: begin_close), before any
-- leaves: the caller still owns the partition (fence), the bucket is not recorded yet (a
-- close recorded meanwhile, or a retry whose first reply was lost, returns {0} and sends
-- nothing), and the close's decisions are recorded on its first attempt only: the LSTM
-- version it publishes with (0: none) and its alert transitions, each series' alert state
-- and sequence number set and the alert pushed to the outbox. A retry, by this worker after a
-- failed write or by the next owner after a crash, finds them and sends the same alerts with
-- the same content, whatever the stock or the trainer did meanwhile.
-- A series whose alert changes gets the new reorder point with it, so that the alert walk of
-- a stock change before the close is recorded compares with the point the alert came from.
-- The LSTM version also goes to the partition's per-bucket record of the versions served,
-- which a restart replays the closes after its snapshot with (trimmed with the history).
-- KEYS: owner, clock, outbox, reorder points, LSTM versions served. ARGV: key scheme and wire
-- format, generation, bucket, version, how many alerts at the head of the outbox were delivered,
-- then the alerts, each a JSON outbox record [series, status, seq, on_hand, rop, ts_ms, on_order,
-- pack_size] (streamer/features/codec.py: OUTBOX_FIELDS). Returns {1, the outbox} or {0}.
local clock, outbox, rops, served = KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local bucket = ARGV[3]
if tonumber(ARGV[5]) > 0 then redis.call('LTRIM', outbox, tonumber(ARGV[5]), -1) end
local recorded = tonumber(redis.call('HGET', clock, 'closed'))
if recorded and recorded >= tonumber(bucket) then return {0} end
if redis.call('HGET', clock, 'lstm_bucket') ~= bucket then
  redis.call('HSET', clock, 'lstm_bucket', bucket, 'lstm_version', ARGV[4])
  if tonumber(ARGV[4]) > 0 then redis.call('HSET', served, bucket, ARGV[4]) end
end
if redis.call('HGET', clock, 'alerts_bucket') ~= bucket then
  redis.call('HSET', clock, 'alerts_bucket', bucket)
  for i = 6, #ARGV do
    local a, O = cjson.decode(ARGV[i]), F.outbox
    redis.call('HSET', series_key(a[O.series], 'state'), 'alert', a[O.status],
      'alert_seq', a[O.seq], 'alert_ts', string.format('%.17g', a[O.ts_ms] / 1000))
    redis.call('HSET', rops, a[O.series], a[O.rop])
    redis.call('RPUSH', outbox, ARGV[i])
  end
end
return {1, redis.call('LRANGE', outbox, 0, -1)}
