-- What a bucket close reads of a partition's series (streamer/features/store.py: read_close): the
-- state columns of a chunk of them a call, so that no call holds Redis long whatever the size of
-- the partition. KEYS: the partition's active series. ARGV: key scheme and wire format, then
-- either 'since', a first active bucket and a most: the series active since then, and their
-- state when there are at most that many; or 'series' and the series to read. Returns one JSON
-- object: the series (`names`) and, unless too many, a column each of their state (`cols`, one
-- value per series, false where a series has none). No reorder point (a long record) passes
-- through here: Lua interns every string it handles (docs/redis-layout.md).
local names
if ARGV[2] == 'since' then
  names = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[3], '+inf')
  if #names > tonumber(ARGV[4]) then return cjson.encode({names = names}) end
else
  names = {unpack(ARGV, 3)}
end
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
return cjson.encode({names = names, cols = cols})
