-- The state columns a bucket close reads of a chunk of a partition's series (streamer/features/
-- store.py: read_close), a chunk a call so that no call holds Redis long whatever the size of the
-- partition. KEYS: the partition's active series (its slot). ARGV: key scheme and wire format,
-- then the series. Returns one JSON object of columns, one value per series (false where a
-- series has no value). No reorder point (a long record) passes through here: Lua interns every
-- string it handles (docs/redis-layout.md).
local cols = {first = {}, lead = {}, on_hand = {}, known = {}, alert = {}, seq = {}, on_order = {},
  pack = {}}
for i = 2, #ARGV do
  local v = redis.call('HMGET', series_key(ARGV[i], 'state'),
    'first_bucket', 'lead_time', 'on_hand', 'stock_known', 'alert', 'alert_seq', 'on_order',
    'pack_size')
  local j = i - 1
  cols.first[j] = v[1]; cols.lead[j] = v[2]; cols.on_hand[j] = v[3]
  cols.known[j] = v[4]; cols.alert[j] = v[5]; cols.seq[j] = v[6]
  cols.on_order[j] = v[7]; cols.pack[j] = v[8]
end
return cjson.encode(cols)
