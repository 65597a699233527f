-- What a bucket close reads of a partition's series (streamer/features/store.py: read_close): the
-- state columns of a chunk of them a call, so that no call holds Redis long whatever the size of
-- the partition. KEYS: the partition's owner, its active series, its touched series (whose
-- state changed since the last close read them: streamer/features/states.py). ARGV: key scheme
-- and wire format, the caller's owner generation (fenced: a worker paused past its session
-- must not empty the touched set its successor reads), then either 'since', a first active
-- bucket, a most and 'all' or 'touched': the series active since then and the touched ones
-- (the set is emptied: the caller keeps what it reads), with the state of all of them when
-- asked and there are at most that many; or 'series' and the series to read. Returns one JSON
-- object: the series (`names`), the touched series (`touched`) and, when read, a column each
-- of their state (`cols`, one value per series, false where a series has none). No reorder
-- point (a long record) passes through here: Lua interns every string it handles
-- (docs/redis-layout.md).
local names, touched
if ARGV[3] == 'since' then
  names = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[4], '+inf')
  touched = redis.call('SMEMBERS', KEYS[3])
  redis.call('DEL', KEYS[3])
  if ARGV[6] ~= 'all' or #names > tonumber(ARGV[5]) then
    return cjson.encode({names = names, touched = touched})
  end
else
  names = {unpack(ARGV, 4)}
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
return cjson.encode({names = names, touched = touched, cols = cols})
