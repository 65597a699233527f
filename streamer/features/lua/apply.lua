-- The events of one segment of a partition, applied atomically (streamer/features/store.py: apply).
-- KEYS: owner, offsets, stats, clock, pending, active series, order counts, reorder points, alert
-- outbox, touched series (each series whose state an event may change is added: a close reads again
-- only those, streamer/features/states.py). ARGV: key scheme and wire format (scheme.lua),
-- generation, dedupe ttl, moves window (ms), series ttl, alert hysteresis, how many alerts at the
-- head of the outbox were delivered, the events as one JSON array of event records [kind, series,
-- event_id, bucket, ts_ms, quantity, unit_price, offsets_field, offset, lead_time_days,
-- moves_clock, po_id, pack_size, customer_id, promo], the stock clock to advance to after them (ms,
-- or ''), the offsets to move to at least (JSON {topic:partition: next offset}), whether to keep
-- the orders' customer and promotion signals (1/0: SHELFCAST_LSTM_SIGNALS; off, an order costs what
-- it did), how much further back than the moves window movements are kept while the partition's
-- orders were applied ahead of its inventory (ms). Returns {status of each event, on hand after
-- it ('' for a stale snapshot or an offset regression), the outbox: alerts not yet known delivered, each a JSON outbox record [series,
-- status, seq, on_hand, rop, ts_ms, on_order, pack_size]}. Records and enums:
-- streamer/features/codec.py.
local offsets, stats, clock_key, pending, active, orders, rops, outbox, touched = unpack(KEYS, 2)
local ttl, window, series_ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local hysteresis, keep_signals = tonumber(ARGV[6]), ARGV[11] == '1'
local moves_lead = tonumber(ARGV[12])
-- the alerts the previous call returned were delivered: they leave the outbox
if tonumber(ARGV[7]) > 0 then redis.call('LTRIM', outbox, tonumber(ARGV[7]), -1) end
local statuses, onhand, next_offset = {}, {}, {}

-- The alert walk: every change of the inventory position (on hand + on order) is compared
-- with the series' reorder point (the one its latest close stored) and a change of status is
-- recorded here, sequence number included, before any alert leaves: a redelivered event finds
-- its alert already decided and in the outbox, never decides it again. Same rule as
-- streamer/alerts/reorder.py: transitions (without a previous reorder point, which only a close
-- has); and a purchase order (``ordering``) acknowledges a raised alert and clears it, so the
-- next shortfall raises the next alert and order: if sales since the alert or a new forecast
-- left the position short even so, the next sale or close raises it again with what is
-- still missing, and an alert never stays raised with nobody told to order.
local function walk(s, ts, ordering)
  local st = series_key(s, 'state')
  local v = redis.call('HMGET', st, 'alert', 'alert_seq', 'stock_known', 'on_hand', 'on_order',
    'pack_size')
  local packed = redis.call('HGET', rops, s)
  if v[3] ~= '1' or not packed then return end
  local rop
  if string.sub(packed, 1, 1) == '[' then
    rop = cjson.decode(packed)[F.rop.rop]
  else  -- written before the reorder point kept its settings: ``|``-joined
    rop = tonumber(string.match(packed, '^[^|]*'))
  end
  if type(rop) ~= 'number' or rop ~= rop then return end
  local on_hand, on_order = tonumber(v[4] or '0'), tonumber(v[5] or '0')
  -- stock below zero is sales the records did not have: shelves lose sales, they do not
  -- backorder them, so it counts as none (streamer/alerts/reorder.py: inventory_position)
  local position, status = math.max(on_hand, 0) + on_order, nil
  if v[1] ~= ALERT.raised and position <= rop then status = ALERT.raised
  elseif v[1] == ALERT.raised and (ordering or position > math.max(rop * (1 + hysteresis),
      rop + 1)) then
    status = ALERT.cleared
  end
  if status == nil then return end
  local seq = tonumber(v[2] or '0') + 1
  redis.call('HSET', st, 'alert', status, 'alert_seq', seq,
    'alert_ts', string.format('%.17g', ts / 1000))
  redis.call('RPUSH', outbox, cjson.encode(record('outbox', {series = s, status = status,
    seq = seq, on_hand = on_hand, rop = packed, ts_ms = ts, on_order = on_order,
    pack_size = tonumber(v[6] or '0')})))
end

-- Stock on order, per purchase order (the series' po hash: PO id -> units not received yet)
-- and in all (the state's on_order, the sum of the positive amounts). An order adds; a
-- cancellation (ordered < 0) or a delivery naming the PO takes off at most what the PO still
-- has, so what a delivery brings beyond it is stock. A delivery read before its PO (the
-- supplier's note came first) is kept as units received ahead, a negative amount, which the
-- PO nets off when it comes: nothing that has arrived stays on order.
local function on_order(s, po, qty, delivery)
  local pos = series_key(s, 'po')
  local left = tonumber(redis.call('HGET', pos, po) or '0')
  local after = left + qty
  if left > 0 and qty < 0 then after = math.max(after, 0)
  elseif left <= 0 and qty < 0 and not delivery then after = left end
  if after == left then return end
  if after == 0 then
    redis.call('HDEL', pos, po)
  else
    redis.call('HSET', pos, po, after)
  end
  local change = math.max(after, 0) - math.max(left, 0)
  if change ~= 0 then redis.call('HINCRBY', series_key(s, 'state'), 'on_order', change) end
end

-- the newest inventory event time read in the partition (ms; -1: none yet), stored at the end
local inventory = tonumber(redis.call('HGET', clock_key, 'inventory') or '-1')
local inventory_moved = false

-- Where a series' trim of its movements may cut: a snapshot counts those after it, so they are
-- kept for the window before the newest movement, or before the newest inventory event read
-- in the partition when that is older, at most ``moves_lead`` further back. Orders applied
-- ahead of their inventory (a backlog read faster on one topic, a Redis outage) thus leave a
-- snapshot stamped among them, still to be read, the movements after it: how far one topic
-- was read ahead of the other changes no stock.
local function kept_from(newest)
  return math.min(newest, math.max(inventory, newest - moves_lead)) - window
end

-- Where the series' movements were last cut (``moves_from``; before it was stored, the window
-- before the newest movement): a snapshot older than that misses some of those after it.
local function trimmed(moves_ts, moves_from)
  if moves_from then return tonumber(moves_from) end
  if moves_ts then return tonumber(moves_ts) - window end
  return -math.huge
end

-- Whether it moved the stock (it added a member to the series' movements).
local function move(s, member, delta, ts)
  local st = series_key(s, 'state')
  local kept = redis.call('HMGET', st, 'moves_ts', 'moves_from', 'snapshot_ts')
  -- the newer snapshot already counts this movement
  if ts <= tonumber(kept[3] or '-1') then return false end
  redis.call('HINCRBY', st, 'on_hand', delta)
  -- the time keeps one id reused in another bucket (dedupe is per bucket) a separate member
  redis.call('ZADD', series_key(s, 'moves'), ts, member .. '|' .. ts .. '|' .. delta)
  if ts > tonumber(kept[1] or '-1') then
    local from = math.max(kept_from(ts), trimmed(kept[1], kept[2]))
    redis.call('HSET', st, 'moves_ts', ts, 'moves_from', from)
    redis.call('ZREMRANGEBYSCORE', series_key(s, 'moves'), '-inf', '(' .. from)
  end
  return true
end

local function snapshot(s, value, ts)
  local st = series_key(s, 'state')
  local v = redis.call('HMGET', st, 'snapshot_ts', 'moves_ts', 'moves_from')
  if ts <= tonumber(v[1] or '-1') or ts < trimmed(v[2], v[3]) then return false end
  local later = 0
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', series_key(s, 'moves'), '(' .. ts, '+inf')) do
    later = later + tonumber(string.match(m, '|(-?%d+)$'))
  end
  redis.call('HSET', st, 'on_hand', value + later, 'snapshot_ts', ts)
  redis.call('ZREMRANGEBYSCORE', series_key(s, 'moves'), '-inf', ts)
  return true
end

-- A delivery, an adjustment or a purchase order, at its event time: a delivery naming its
-- purchase order also takes what it brings off that order.
local function restock(s, eid, kind, qty, po, ts)
  if kind == KIND.purchase_order then
    on_order(s, po, qty, false)
    return
  end
  move(s, eid, qty, ts)
  if po ~= nil and po ~= cjson.null then on_order(s, po, -qty, true) end
  redis.call('HSET', series_key(s, 'state'), 'stock_known', 1)
end

-- Stock moves in event time. Orders and inventory are two topics read side by side, so a
-- delivery can be read before orders stamped earlier than it (a replay, or a worker catching
-- up on an orders backlog); applied at once, it would lift the stock those orders see. A delta
-- stamped after the partition's stock clock (the newest order time applied there) waits in
-- the partition's pending set until an order, or an idle advance, passes it. A partition with
-- no order yet has no clock: its deltas apply at once.
local clock = tonumber(redis.call('HGET', clock_key, 'stock') or '-1')
local clock_moved = false
local first = redis.call('ZRANGE', pending, 0, 0, 'WITHSCORES')
local next_due = first[2] and tonumber(first[2]) or math.huge

local function advance(ts)
  if ts <= clock then return end
  clock, clock_moved = ts, true  -- stored once, at the end
  if ts < next_due then return end
  local due = redis.call('ZRANGEBYSCORE', pending, '-inf', ts, 'WITHSCORES')
  for j = 1, #due, 2 do
    -- entries deferred before purchase orders have four fields: deltas
    local d, P = cjson.decode(due[j]), F.pending
    local s, qty, kind = d[P.series], d[P.quantity], d[P.kind] or KIND.delta
    local at = tonumber(due[j + 1])
    restock(s, d[P.event_id], kind, qty, d[P.po_id], at)
    redis.call('SADD', touched, s)
    for _, h in ipairs(keys.stock) do redis.call('EXPIRE', series_key(s, h), series_ttl) end
    walk(s, at, kind == KIND.purchase_order and qty > 0)
  end
  redis.call('ZREMRANGEBYSCORE', pending, '-inf', ts)
  first = redis.call('ZRANGE', pending, 0, 0, 'WITHSCORES')
  next_due = first[2] and tonumber(first[2]) or math.huge
end

local function defer(s, eid, qty, bucket, ts, kind, po)
  -- id and bucket make the member unique, as dedupe does: equal deltas are two deliveries
  redis.call('ZADD', pending, ts, cjson.encode(record('pending', {series = s, event_id = eid,
    quantity = qty, bucket = bucket, kind = kind, po_id = po})))
  if ts < next_due then next_due = ts end
end

-- The customer and promotion signals of the series in the bucket (models/signals.py, the same
-- rule line by line): kept as a JSON array in the series' signals hash and, for a close's
-- one read of all its series, in the partition's hash of the bucket.
local function store_signals(s, bucket, v)
  local packed = cjson.encode(v)
  redis.call('HSET', series_key(s, 'signals'), bucket, packed)
  redis.call('HSET', bucket_key('signals', bucket), s, packed)
end

local function read_signals(s, bucket)
  local packed = redis.call('HGET', series_key(s, 'signals'), bucket)
  if packed then return cjson.decode(packed) end
  return record('signals', {buyers = 0, new_buyers = 0, top_buyer = 0, max_line = 0, promo = 0})
end

local function signal_order(s, bucket, qty, customer, promo)
  local S, v = F.signals, read_signals(s, bucket)
  v[S.max_line] = math.max(v[S.max_line], qty)
  if promo then v[S.promo] = v[S.promo] + qty end
  if customer ~= cjson.null and customer ~= nil then
    local buyers = series_key(s, 'buyers')
    local seen, units = redis.call('HGET', buyers, customer), qty
    if not seen then v[S.new_buyers] = v[S.new_buyers] + 1 end
    local last, had = string.match(seen or '', '^(-?%d+):(.+)$')
    if last and tonumber(last) == bucket then
      units = units + tonumber(had)
    else
      v[S.buyers] = v[S.buyers] + 1
    end
    v[S.top_buyer] = math.max(v[S.top_buyer], units)
    redis.call('HSET', buyers, customer, bucket .. ':' .. units)
  end
  store_signals(s, bucket, v)
end

-- a cancelled line leaves the bucket's largest line: the largest size still standing
local function signal_cancel(s, bucket, sizes)
  local S, v, flat, largest = F.signals, read_signals(s, bucket), redis.call('HGETALL', sizes), 0
  for i = 1, #flat, 2 do
    if tonumber(flat[i + 1]) > 0 then largest = math.max(largest, tonumber(flat[i])) end
  end
  v[S.max_line] = largest
  store_signals(s, bucket, v)
end

local function order(s, bucket, qty, price, customer, promo, fresh)
  local st, sizes = series_key(s, 'state'), series_key(s, 'sizes', bucket)
  -- the partition's demand and revenue of the bucket, by series: what its close reads
  local pdemand, prevenue = bucket_key('demand', bucket), bucket_key('revenue', bucket)
  if qty > 0 then
    redis.call('HINCRBY', series_key(s, 'demand'), bucket, qty)
    redis.call('HINCRBY', pdemand, s, qty)
    redis.call('HINCRBY', series_key(s, 'lines'), bucket, 1)
    if price ~= cjson.null then
      redis.call('HINCRBYFLOAT', series_key(s, 'revenue'), bucket, qty * tonumber(price))
      redis.call('HINCRBYFLOAT', prevenue, s, qty * tonumber(price))
      redis.call('HSET', st, 'last_price', price)
    end
    redis.call('HINCRBY', sizes, tostring(qty), 1)
    if not fresh then redis.call('EXPIRE', sizes, ttl) end
    redis.call('HINCRBY', orders, bucket, 1)
    if keep_signals then signal_order(s, bucket, qty, customer, promo) end
  elseif tonumber(redis.call('HGET', sizes, tostring(-qty)) or '0') > 0 then
    -- cancels an order of the same size in the same bucket: that order never was demand,
    -- and the cancellation is no return (an 80,995-unit order cancelled minutes later)
    redis.call('HINCRBY', sizes, tostring(-qty), -1)
    redis.call('HINCRBY', series_key(s, 'demand'), bucket, qty)
    redis.call('HINCRBY', pdemand, s, qty)
    redis.call('HINCRBY', series_key(s, 'lines'), bucket, -1)
    if price ~= cjson.null then
      redis.call('HINCRBYFLOAT', series_key(s, 'revenue'), bucket, qty * tonumber(price))
      redis.call('HINCRBYFLOAT', prevenue, s, qty * tonumber(price))
    end
    redis.call('HINCRBY', series_key(s, 'cancelled'), bucket, -qty)
    if keep_signals then signal_cancel(s, bucket, sizes) end
  else
    redis.call('HINCRBY', series_key(s, 'returns'), bucket, -qty)
    redis.call('HINCRBY', pdemand, s, 0)  -- listed, so the close trims its history
  end
end

-- Times to live are refreshed once a bucket for a series' run of priced orders: an EXPIRE of
-- each of its keys at every event was 21-29% of Redis's time an order
-- (scripts/bench_apply.py), and a series' keys may expire up to a bucket before the time to
-- live after its last event. ``ttl_mark`` in its state holds the shape of the priced order
-- (its bucket, and whether it names a customer when the signals are kept) after which every
-- key that such an order writes existed with its time to live. An order of that shape in that
-- bucket writes only those keys, and orders never delete one: it refreshes none, unless the
-- bucket's id set is new (the ids and sizes, given their shorter time to live together, have
-- expired). Any other event refreshes what it wrote and forgets the mark, since a snapshot may
-- delete the movements (``snapshot``) for the next order to create again. A bucket a close
-- trimmed out of the history may have taken the history hashes with it (close.lua): its
-- orders have no shape. The priced shape, or nil.
local history_trimmed = tonumber(redis.call('HGET', clock_key, 'trimmed') or '') or -math.huge
local function priced(kind, qty, price, customer, bucket)
  if kind ~= KIND.order or qty <= 0 or price == cjson.null then return nil end
  if bucket <= history_trimmed then return nil end
  if not keep_signals then return tostring(bucket) end
  return bucket .. ((customer == cjson.null or customer == nil) and ':n' or ':c')
end

local counts, E = {}, F.event  -- counts by status
for _, e in ipairs(cjson.decode(ARGV[8])) do
  local kind, s, eid, bucket = e[E.kind], e[E.series], e[E.event_id], e[E.bucket]
  local ts, qty, price, po = e[E.ts_ms], e[E.quantity], e[E.unit_price], e[E.po_id]
  local tp, off, lead = e[E.offsets_field], e[E.offset], e[E.lead_time_days]
  if next_offset[tp] == nil then
    next_offset[tp] = tonumber(redis.call('HGET', offsets, tp) or '0')
  end
  local ids = series_key(s, 'ids', bucket)
  local status, deferred = STATUS.duplicate, false
  if off < next_offset[tp] then
    -- below what this partition already applied: a redelivery, unless the id is new, which
    -- means the offsets went backwards (a recreated topic): skipped, but reported
    if redis.call('SISMEMBER', ids, eid) == 0 then status = STATUS.offset_regression end
  elseif redis.call('SADD', ids, eid) == 1 then
    local st = series_key(s, 'state')
    local shape = priced(kind, qty, price, e[E.customer_id], bucket)
    -- the bucket's ids and sizes live shorter than the mark: expired, they are new again
    local fresh = shape ~= nil and redis.call('HGET', st, 'ttl_mark') == shape
      and redis.call('SCARD', ids) > 1
    local moved = false
    if not fresh then redis.call('EXPIRE', ids, ttl) end
    status = STATUS.applied
    redis.call('SADD', touched, s)
    if kind ~= KIND.order and ts > inventory then inventory, inventory_moved = ts, true end
    if kind == KIND.order then
      order(s, bucket, qty, price, e[E.customer_id], e[E.promo], fresh)
      if e[E.moves_clock] then
        advance(ts)
        -- the partition's first order: the buckets before it have nothing to close, and a
        -- process restarted before its first close must not start from a later order's
        redis.call('HSETNX', clock_key, 'closed', bucket - 1)
      end
      moved = move(s, eid, -qty, ts)
      redis.call('ZADD', active, 'GT', bucket, s)
    elseif (kind == KIND.delta or kind == KIND.purchase_order) and clock >= 0 and ts > clock then
      defer(s, eid, qty, bucket, ts, kind, po)
      deferred = true
    elseif kind == KIND.delta or kind == KIND.purchase_order then
      restock(s, eid, kind, qty, po, ts)
    elseif snapshot(s, qty, ts) then
      redis.call('HSET', st, 'stock_known', 1)
    else
      status = STATUS.stale
    end
    -- a series with no event for series_ttl ages out entirely
    if not fresh then
      for _, h in ipairs(keys.expire) do redis.call('EXPIRE', series_key(s, h), series_ttl) end
      if keep_signals then
        for _, h in ipairs(keys.signals) do redis.call('EXPIRE', series_key(s, h), series_ttl) end
      end
      -- an order that moved no stock left the movements as they were: perhaps none
      if shape ~= nil and moved then
        redis.call('HSET', st, 'ttl_mark', shape)
      elseif shape == nil then
        redis.call('HDEL', st, 'ttl_mark')
      end
    end
    if lead ~= cjson.null then redis.call('HSET', st, 'lead_time', lead) end
    if e[E.pack_size] ~= cjson.null then redis.call('HSET', st, 'pack_size', e[E.pack_size]) end
    -- Only orders make a series active (forecast at each close) and set its first bucket:
    -- their order relative to the closes is fixed by the orders topic, while how far the
    -- inventory topic was read ahead of it is not, and must not decide what a close learns.
    if kind == KIND.order and not fresh then redis.call('HSETNX', st, 'first_bucket', bucket) end
    if not deferred and status == STATUS.applied then
      walk(s, ts, kind == KIND.purchase_order and qty > 0)
    end
  end
  if off + 1 > next_offset[tp] then next_offset[tp] = off + 1 end
  counts[status] = (counts[status] or 0) + 1
  statuses[#statuses + 1] = status
  if status == STATUS.stale or status == STATUS.offset_regression then
    onhand[#onhand + 1] = ''
  else
    onhand[#onhand + 1] = redis.call('HGET', series_key(s, 'state'), 'on_hand') or '0'
  end
end
if ARGV[9] ~= '' then advance(tonumber(ARGV[9])) end
-- input taken without an effect (dead letters) still moves the offsets
for tp, nxt in pairs(cjson.decode(ARGV[10])) do
  local stored = next_offset[tp] or tonumber(redis.call('HGET', offsets, tp) or '0')
  next_offset[tp] = math.max(stored, nxt)
end
if clock_moved then redis.call('HSET', clock_key, 'stock', clock) end
if inventory_moved then redis.call('HSET', clock_key, 'inventory', inventory) end
for tp, nxt in pairs(next_offset) do redis.call('HSET', offsets, tp, nxt) end
for value, counter in pairs(wire.counters) do
  redis.call('HINCRBY', stats, counter, counts[tonumber(value)] or 0)
end
return {statuses, onhand, redis.call('LRANGE', outbox, 0, -1)}
