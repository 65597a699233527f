-- One bucket close of a partition, written atomically (streamer/features/store.py: write_close).
-- KEYS: owner, active series, clock, stats, closed flags, order counts, evaluation sums, model
-- snapshot, the demand and revenue of the bucket leaving the history, reorder points, rolling
-- features, latest forecasts, LSTM versions served, the signals of the bucket leaving the
-- history. ARGV: key scheme and wire format, generation,
-- bucket to trim, first active bucket, learned count, closed bucket, its closed flag, snapshot
-- ttl, how many chunks of the model snapshot follow the rest (0: none), the clock fields as a JSON
-- object, the evaluation sums as a JSON object, then the snapshot's chunks (the close's alerts
-- were recorded by begin_close.lua, its per-series values by plain commands before this script:
-- no value of a series passes through Lua, which interns every string). Returns 1, or 0 when
-- nothing was written.
local active, clock_key, stats, closed_flags, orders, evaluation, model = unpack(KEYS, 2, 8)
local trim_demand, trim_revenue, rops, rolling, forecasts, served = unpack(KEYS, 9, 14)
local trim_signals = KEYS[15]
local trim, first_active, bucket, ttl = ARGV[3], ARGV[4], ARGV[6], tonumber(ARGV[8])
local clock = cjson.decode(ARGV[10])
-- A close already recorded (a retry whose first reply was lost) or older than the one
-- recorded writes nothing: the clock never moves back, and no sum or counter is added twice.
local recorded = tonumber(redis.call('HGET', clock_key, 'closed'))
if recorded and recorded >= clock.closed then return 0 end
local chunks = tonumber(ARGV[9])
if chunks > 0 then
  redis.call('DEL', model)
  redis.call('RPUSH', model, unpack(ARGV, 12, 11 + chunks))
  redis.call('EXPIRE', model, ttl)
end
-- one command per few thousand series, not one per series: Lua's stack bounds unpack()
local function hdel_all(keys, names)
  for i = 1, #names, 4000 do
    local chunk = {unpack(names, i, math.min(i + 3999, #names))}
    for _, key in ipairs(keys) do redis.call('HDEL', key, unpack(chunk)) end
  end
end
redis.call('HSET', closed_flags, bucket, ARGV[7])
redis.call('HDEL', closed_flags, trim)
redis.call('HDEL', orders, trim)
redis.call('HDEL', served, trim)
redis.call('HSET', clock_key, 'closed', clock.closed)
-- event time never moves back either: a close stamped from an older view keeps the newer
local newest = tonumber(redis.call('HGET', clock_key, 'max_ts') or '') or -math.huge
if clock.max_ts > newest then
  redis.call('HSET', clock_key, 'max_ts', string.format('%.17g', clock.max_ts))
end
for k, v in pairs(cjson.decode(ARGV[11])) do
  redis.call('HINCRBYFLOAT', evaluation, k, string.format('%.17g', v))
end
-- the history leaving the window: only series that had orders in that bucket have any
for _, s in ipairs(redis.call('HKEYS', trim_demand)) do
  for _, h in ipairs(keys.history) do redis.call('HDEL', series_key(s, h), trim) end
end
for _, s in ipairs(redis.call('HKEYS', trim_signals)) do
  redis.call('HDEL', series_key(s, 'signals'), trim)
end
redis.call('DEL', trim_demand, trim_revenue, trim_signals)
-- A trimmed hash may be gone: the apply script's next order of a bucket up to here gives it
-- its time to live again (apply.lua: ``priced``). The newest such bucket, in case the history
-- was made longer.
if tonumber(trim) > (tonumber(redis.call('HGET', clock_key, 'trimmed') or '') or -math.huge) then
  redis.call('HSET', clock_key, 'trimmed', trim)
end
local gone = redis.call('ZRANGEBYSCORE', active, '-inf', '(' .. first_active)
if #gone > 0 then hdel_all({rops, rolling, forecasts}, gone) end
-- a series back after a whole activity window starts afresh from then, in the live bank and
-- in a restart's replay alike: its next order records a new first bucket, which an order the
-- mark of priced orders lets pass would not (apply.lua: ``priced``)
for _, s in ipairs(gone) do
  redis.call('HDEL', series_key(s, 'state'), 'first_bucket', 'ttl_mark')
end
redis.call('ZREMRANGEBYSCORE', active, '-inf', '(' .. first_active)
redis.call('HINCRBY', stats, 'buckets_closed', 1)
-- (series, bucket) pairs learned, written with the clock: it equals the distinct pairs closed
-- exactly when no bucket was learned twice
redis.call('HINCRBY', stats, 'learned_buckets', tonumber(ARGV[5]))
return 1
