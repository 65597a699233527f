-- What the close of a bucket reads of a partition (streamer/features/store.py: read_close).
-- KEYS: active series, closed flags, order counts, the demand and revenue of the bucket closing,
-- clock. ARGV: key scheme and wire format, first active bucket, the bucket, how
-- many buckets of closed flags before it. Returns one JSON object of columns, one value per active
-- series (false where a series has no value), the order count, the closed flags, and the LSTM
-- version pinned by an earlier attempt at a close ([bucket, version], or false). No reorder
-- point (a long record) passes through here: Lua interns every string (store.py: write_close).
local names = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[2], '+inf')
local cols = {first = {}, lead = {}, on_hand = {}, known = {}, alert = {}, seq = {}, on_order = {},
  pack = {}}
for i, s in ipairs(names) do
  local v = redis.call('HMGET', series_key(s, 'state'),
    'first_bucket', 'lead_time', 'on_hand', 'stock_known', 'alert', 'alert_seq', 'on_order',
    'pack_size')
  cols.first[i] = v[1]; cols.lead[i] = v[2]; cols.on_hand[i] = v[3]
  cols.known[i] = v[4]; cols.alert[i] = v[5]; cols.seq[i] = v[6]
  cols.on_order[i] = v[7]; cols.pack[i] = v[8]
end
local b, lookback = tonumber(ARGV[3]), tonumber(ARGV[4])
local past = {}
for j = b - lookback, b - 1 do past[#past + 1] = tostring(j) end
return cjson.encode({
  names = names, cols = cols,
  demand = redis.call('HGETALL', KEYS[4]), revenue = redis.call('HGETALL', KEYS[5]),
  orders = redis.call('HGET', KEYS[3], ARGV[3]) or '0',
  past = past, closed = redis.call('HMGET', KEYS[2], unpack(past)),
  lstm = redis.call('HMGET', KEYS[6], 'lstm_bucket', 'lstm_version'),
})
