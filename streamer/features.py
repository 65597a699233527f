"""The Redis feature store: per-series demand buckets, rolling features, stock and alert state.

Every write path is batched: one Lua script applies a whole segment of events atomically, and
bucket close reads and writes all series of a partition in one pipeline each. The key layout
is documented in docs/redis-layout.md; keys of one series share the hash tag ``{sku@location}``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import orjson
import pandas as pd
import redis.asyncio as aioredis

from streamer import metrics

log = logging.getLogger(__name__)

PREFIX = "shelfcast"
OFFSETS = f"{PREFIX}:offsets"
STATS = f"{PREFIX}:stats"
EVALUATION = f"{PREFIX}:evaluation"
CLOCK = f"{PREFIX}:clock"
# Stock movements are kept this long (event time) so an absolute snapshot can be applied on
# top of the movements that came after it; a snapshot older than that is ignored as stale.
MOVES_WINDOW_MS = 14 * 86_400_000

APPLIED, DUPLICATE, STALE, OFFSET_REGRESSION = 1, 0, 2, 3
# A Redis string holds at most 512 MB; and the event loop parses each piece of a reply in one
# go, so pieces stay small enough for that to take a few milliseconds.
SNAPSHOT_CHUNK = 8 << 20

# ARGV: dedupe ttl, window_ms, n_events, series ttl, then the events as one JSON array of
#   arrays of 12 values (one argument: redis-py encodes every argument on its own, which cost a
#   quarter of the event path's CPU at 11 per event): kind (o=order, s=stock snapshot, d=stock
#   delta), series, event_id, bucket, ts_ms, quantity (order quantity / on_hand / delta),
#   unit_price as a string or null, offsets field ("topic:partition"), offset, partition as a
#   string, lead_time_days as a string or null, whether an order moves its partition's stock
#   clock (false for one the pipeline holds to be skewed far ahead);
#   then (partition, ts_ms) pairs: stock clocks to advance after the events (idle partitions).
# Returns {statuses, on_hand after each event (current stock for duplicates, '' for stale
# snapshots), the alert state and reorder point (packed, ROP_FIELDS) of every series in the
# segment, the pending deltas that took effect
# as (index of the event before which they did, partition, series, ts_ms, on_hand after) flat}.
# A series stays in its partition's `unwalked` hash from its fold until the pipeline has
# recorded the alert state after it (`write_alert_states`); each call reports the ones left
# from an earlier call (a crash in between) again, before its first event.
APPLY_LUA = """
local ttl, window, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local series_ttl = tonumber(ARGV[4])
local statuses, onhand, touched, order = {}, {}, {}, {}
local next_offset = {}
local part_of = {}
local function touch(s, part)
  if touched[s] == nil then touched[s] = true; order[#order + 1] = s; part_of[s] = part end
end

local function move(base, member, delta, ts)
  local st = base .. 'state'
  local snap = tonumber(redis.call('HGET', st, 'snapshot_ts') or '-1')
  if ts <= snap then return end  -- the newer snapshot already counts this movement
  redis.call('HINCRBY', st, 'on_hand', delta)
  -- the time keeps one id reused in another bucket (dedupe is per bucket) a separate member
  redis.call('ZADD', base .. 'moves', ts, member .. '|' .. ts .. '|' .. delta)
  local newest = tonumber(redis.call('HGET', st, 'moves_ts') or '-1')
  if ts > newest then
    redis.call('HSET', st, 'moves_ts', ts)
    redis.call('ZREMRANGEBYSCORE', base .. 'moves', '-inf', '(' .. (ts - window))
  end
end

local function snapshot(base, value, ts)
  local st = base .. 'state'
  local snap = tonumber(redis.call('HGET', st, 'snapshot_ts') or '-1')
  local newest = tonumber(redis.call('HGET', st, 'moves_ts') or '-1')
  if ts <= snap or ts < newest - window then return false end
  local later = 0
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', base .. 'moves', '(' .. ts, '+inf')) do
    later = later + tonumber(string.match(m, '|(-?%d+)$'))
  end
  redis.call('HSET', st, 'on_hand', value + later, 'snapshot_ts', ts)
  redis.call('ZREMRANGEBYSCORE', base .. 'moves', '-inf', ts)
  return true
end

-- Stock moves in event time. Orders and inventory are two topics read side by side, so a
-- delivery can be read before orders stamped earlier than it (a replay, or a worker catching
-- up on an orders backlog); applied at once, it would lift the stock those orders see. A delta
-- stamped after its partition's stock clock (the newest order time applied there) waits in the
-- partition's pending set until an order, or an idle advance, passes it. A partition with no
-- order yet has no clock: its deltas apply at once.
local clocks, next_due, folds, moved = {}, {}, {}, {}
local function pending_key(part) return 'shelfcast:part:' .. part .. ':pending' end
local function unwalked_key(part) return 'shelfcast:part:' .. part .. ':unwalked' end

local function report(index, part, s, at)
  touch(s, part)
  local now = redis.call('HGET', 'shelfcast:{' .. s .. '}:state', 'on_hand') or '0'
  folds[#folds + 1] = index; folds[#folds + 1] = part; folds[#folds + 1] = s
  folds[#folds + 1] = at; folds[#folds + 1] = now
end
local function clock_of(part)
  if clocks[part] == nil then
    clocks[part] = tonumber(redis.call('HGET', 'shelfcast:stock_clock', part) or '-1')
    local first = redis.call('ZRANGE', pending_key(part), 0, 0, 'WITHSCORES')
    next_due[part] = first[2] and tonumber(first[2]) or math.huge
  end
  return clocks[part]
end

local function advance(part, ts, index)
  if ts <= clock_of(part) then return end
  clocks[part] = ts
  moved[part] = true  -- stored once, at the end
  if ts < next_due[part] then return end
  local key = pending_key(part)
  local due = redis.call('ZRANGEBYSCORE', key, '-inf', ts, 'WITHSCORES')
  for j = 1, #due, 2 do
    local s, eid, delta, bucket = unpack(cjson.decode(due[j]))
    local at = tonumber(due[j + 1])
    local base = 'shelfcast:{' .. s .. '}:'
    move(base, eid, delta, at)
    redis.call('ZADD', 'shelfcast:part:' .. part .. ':series', 'NX', bucket, s)
    redis.call('HSET', base .. 'state', 'stock_known', 1)
    redis.call('EXPIRE', base .. 'state', series_ttl)
    redis.call('EXPIRE', base .. 'moves', series_ttl)
    redis.call('HSET', unwalked_key(part), s, at)
    report(index, part, s, at)
  end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', ts)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  next_due[part] = first[2] and tonumber(first[2]) or math.huge
end

local function defer(part, s, eid, delta, bucket, ts)
  -- id and bucket make the member unique, as dedupe does: equal deltas are two deliveries
  redis.call('ZADD', pending_key(part), ts, cjson.encode({s, eid, delta, bucket}))
  if ts < next_due[part] then next_due[part] = ts end
end

local applied, dups, stale, regressions = 0, 0, 0, 0
local events = cjson.decode(ARGV[5])
local parts = {}
for _, e in ipairs(events) do parts[e[10]] = true end
for j = 6, #ARGV, 2 do parts[ARGV[j]] = true end
for part in pairs(parts) do
  local left = redis.call('HGETALL', unwalked_key(part))
  for j = 1, #left, 2 do report(0, part, left[j], tonumber(left[j + 1])) end
end
for i = 0, n - 1 do
  local e = events[i + 1]
  local kind, s, eid, bucket, ts, qty, price = e[1], e[2], e[3], e[4], e[5], e[6], e[7]
  local tp, off, part, lead, moves_clock = e[8], e[9], e[10], e[11], e[12]
  if next_offset[tp] == nil then
    next_offset[tp] = tonumber(redis.call('HGET', KEYS[1], tp) or '0')
  end
  local base = 'shelfcast:{' .. s .. '}:'
  local status, deferred = 0, false
  if off < next_offset[tp] then
    -- below what this partition already applied: a redelivery, unless the id is new, which
    -- means the offsets went backwards (a recreated topic): skipped, but reported
    if redis.call('SISMEMBER', base .. 'ids:' .. bucket, eid) == 0 then status = 3 end
  elseif redis.call('SADD', base .. 'ids:' .. bucket, eid) == 1 then
    redis.call('EXPIRE', base .. 'ids:' .. bucket, ttl)
    local st = base .. 'state'
    status = 1
    if kind == 'o' then
      local sizes = base .. 'sizes:' .. bucket
      -- the partition's demand and revenue of the bucket, by series: what its close reads
      local pdemand = 'shelfcast:part:' .. part .. ':demand:' .. bucket
      local prevenue = 'shelfcast:part:' .. part .. ':revenue:' .. bucket
      if qty > 0 then
        redis.call('HINCRBY', base .. 'demand', bucket, qty)
        redis.call('HINCRBY', pdemand, s, qty)
        redis.call('HINCRBY', base .. 'lines', bucket, 1)
        if price ~= cjson.null then
          redis.call('HINCRBYFLOAT', base .. 'revenue', bucket, qty * tonumber(price))
          redis.call('HINCRBYFLOAT', prevenue, s, qty * tonumber(price))
          redis.call('HSET', st, 'last_price', price)
        end
        redis.call('HINCRBY', sizes, tostring(qty), 1)
        redis.call('EXPIRE', sizes, ttl)
        redis.call('HINCRBY', 'shelfcast:part:' .. part .. ':orders', bucket, 1)
      elseif tonumber(redis.call('HGET', sizes, tostring(-qty)) or '0') > 0 then
        -- cancels an order of the same size in the same bucket: that order never was demand,
        -- and the cancellation is no return (an 80,995-unit order cancelled minutes later)
        redis.call('HINCRBY', sizes, tostring(-qty), -1)
        redis.call('HINCRBY', base .. 'demand', bucket, qty)
        redis.call('HINCRBY', pdemand, s, qty)
        redis.call('HINCRBY', base .. 'lines', bucket, -1)
        if price ~= cjson.null then
          redis.call('HINCRBYFLOAT', base .. 'revenue', bucket, qty * tonumber(price))
          redis.call('HINCRBYFLOAT', prevenue, s, qty * tonumber(price))
        end
        redis.call('HINCRBY', base .. 'cancelled', bucket, -qty)
      else
        redis.call('HINCRBY', base .. 'returns', bucket, -qty)
        redis.call('HINCRBY', pdemand, s, 0)  -- listed, so the close trims its history
      end
      if moves_clock then advance(part, ts, i) end
      move(base, eid, -qty, ts)
      redis.call('ZADD', 'shelfcast:part:' .. part .. ':series', 'GT', bucket, s)
    elseif kind == 'd' and clock_of(part) >= 0 and ts > clock_of(part) then
      defer(part, s, eid, qty, bucket, ts)
      deferred = true
    elseif kind == 'd' then
      move(base, eid, qty, ts)
      redis.call('HSET', st, 'stock_known', 1)
    elseif snapshot(base, qty, ts) then
      redis.call('HSET', st, 'stock_known', 1)
    else
      status = 2
    end
    -- a series with no event for series_ttl ages out entirely
    for _, h in ipairs({'state', 'demand', 'returns', 'lines', 'revenue', 'cancelled', 'moves'}) do
      redis.call('EXPIRE', base .. h, series_ttl)
    end
    if lead ~= cjson.null then redis.call('HSET', st, 'lead_time', lead) end
    redis.call('HSETNX', st, 'first_bucket', bucket)
    if kind ~= 'o' and not deferred then
      -- a series known only from stock still gets forecasts (of zero demand); a deferred
      -- delta counts when it takes effect, or how far the topic was read ahead would decide
      -- which series a close forecasts
      redis.call('ZADD', 'shelfcast:part:' .. part .. ':series', 'NX', bucket, s)
    end
  end
  touch(s, part)
  if off + 1 > next_offset[tp] then next_offset[tp] = off + 1 end
  if status == 1 then applied = applied + 1 elseif status == 0 then dups = dups + 1
  elseif status == 2 then stale = stale + 1 else regressions = regressions + 1 end
  statuses[#statuses + 1] = status
  if status >= 2 then
    onhand[#onhand + 1] = ''
  else
    onhand[#onhand + 1] = redis.call('HGET', base .. 'state', 'on_hand') or '0'
  end
end
for j = 6, #ARGV, 2 do advance(ARGV[j], tonumber(ARGV[j + 1]), n) end
for part in pairs(moved) do redis.call('HSET', 'shelfcast:stock_clock', part, clocks[part]) end
for tp, nxt in pairs(next_offset) do redis.call('HSET', KEYS[1], tp, nxt) end
redis.call('HINCRBY', KEYS[2], 'applied', applied)
redis.call('HINCRBY', KEYS[2], 'duplicate', dups)
redis.call('HINCRBY', KEYS[2], 'stale_snapshot', stale)
redis.call('HINCRBY', KEYS[2], 'offset_regression', regressions)
local states = {}
for _, s in ipairs(order) do
  local v = redis.call('HMGET', 'shelfcast:{' .. s .. '}:state', 'alert', 'alert_seq',
    'stock_known')
  local rop = redis.call('HGET', 'shelfcast:part:' .. part_of[s] .. ':rop', s)
  states[#states + 1] = s
  for j = 1, 3 do states[#states + 1] = v[j] or '' end
  states[#states + 1] = rop or ''
end
return {statuses, onhand, states, folds}
"""
# KEYS: the partition's active-series set, the clock, the stats, the partition's closed flags,
# the partition's order counts, the evaluation sums, the partition's model snapshot, its
# demand and revenue of the bucket leaving the history, its reorder points, its rolling
# features, its latest forecasts.
# ARGV: bucket to trim, first active bucket, learned count, closed bucket, its closed flag,
# snapshot ttl, how many chunks of the partition's model snapshot follow the rest (0: none),
# the clock pairs as a JSON object, the evaluation sums as a JSON object, the alert changes
# as a JSON array of [series, status, seq, ts], then for the reorder points, the rolling
# features and the latest forecasts in turn a JSON array of series and one of their values;
# then the snapshot's chunks. What
# every series writes goes to two partition hashes in a few commands: a command per series
# cost a close 10 us a series in Lua. One script, so a close is atomic like a MULTI, with one
# reply to parse instead of one per command.
CLOSE_LUA = """
local trim, bucket, ttl = ARGV[1], ARGV[4], tonumber(ARGV[6])
local clock = cjson.decode(ARGV[8])
-- A close already recorded (a retry whose first reply was lost) or older than the one
-- recorded (a worker that lost the partition) writes nothing: the clock never moves back,
-- and no sum or counter is added twice.
for k, v in pairs(clock) do
  if string.sub(k, -7) == ':closed' then
    local recorded = tonumber(redis.call('HGET', KEYS[2], k))
    if recorded and recorded >= v then return 0 end
  end
end
local chunks = tonumber(ARGV[7])
if chunks > 0 then
  redis.call('DEL', KEYS[7])
  redis.call('RPUSH', KEYS[7], unpack(ARGV, 17, 16 + chunks))
  redis.call('EXPIRE', KEYS[7], ttl)
end
-- one command per few thousand series, not one per series: Lua's stack bounds unpack()
local function hdel_all(keys, names)
  for i = 1, #names, 4000 do
    local chunk = {unpack(names, i, math.min(i + 3999, #names))}
    for _, key in ipairs(keys) do redis.call('HDEL', key, unpack(chunk)) end
  end
end
redis.call('HSET', KEYS[4], bucket, ARGV[5])
redis.call('HDEL', KEYS[4], trim)
redis.call('HDEL', KEYS[5], trim)
for k, v in pairs(clock) do
  redis.call('HSET', KEYS[2], k, string.format('%.17g', v))
end
for k, v in pairs(cjson.decode(ARGV[9])) do
  redis.call('HINCRBYFLOAT', KEYS[6], k, string.format('%.17g', v))
end
-- series and values as two JSON arrays into the hash, a few thousand pairs a command
local function hset_pairs(key, names, values)
  names, values = cjson.decode(names), cjson.decode(values)
  local flat = {}
  for i, s in ipairs(names) do flat[2 * i - 1] = s; flat[2 * i] = values[i] end
  for i = 1, #flat, 4000 do
    redis.call('HSET', key, unpack(flat, i, math.min(i + 3999, #flat)))
  end
end
hset_pairs(KEYS[10], ARGV[11], ARGV[12])
hset_pairs(KEYS[11], ARGV[13], ARGV[14])
hset_pairs(KEYS[12], ARGV[15], ARGV[16])
for _, a in ipairs(cjson.decode(ARGV[10])) do
  redis.call('HSET', 'shelfcast:{' .. a[1] .. '}:state', 'alert', a[2], 'alert_seq', a[3],
    'alert_ts', string.format('%.17g', a[4]))
end
-- the history leaving the window: only series that had orders in that bucket have any
for _, s in ipairs(redis.call('HKEYS', KEYS[8])) do
  local base = 'shelfcast:{' .. s .. '}:'
  for _, h in ipairs({'demand', 'returns', 'lines', 'revenue', 'cancelled'}) do
    redis.call('HDEL', base .. h, trim)
  end
end
redis.call('DEL', KEYS[8], KEYS[9])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
if #gone > 0 then hdel_all({KEYS[10], KEYS[11], KEYS[12]}, gone) end
-- a series back after a whole activity window starts afresh from then, in the live bank and
-- in a restart's replay alike: its next event records a new first bucket
for _, s in ipairs(gone) do
  redis.call('HDEL', 'shelfcast:{' .. s .. '}:state', 'first_bucket')
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
redis.call('HINCRBY', KEYS[3], 'buckets_closed', 1)
-- (series, bucket) pairs learned, written with the clock: it equals the distinct pairs closed
-- exactly when no bucket was learned twice
redis.call('HINCRBY', KEYS[3], 'learned_buckets', tonumber(ARGV[3]))
return 1
"""
# KEYS: the partition's active-series set, closed flags, order counts, its demand and
# revenue of the bucket closing, and its reorder points. ARGV: first active bucket, the
# bucket, how many buckets of closed flags before it. Returns one JSON object of columns, one
# value per active series (false where a series has no value), the order count and the closed
# flags.
READ_CLOSE_LUA = """
local names = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')
local cols = {first = {}, lead = {}, on_hand = {}, known = {}, alert = {}, seq = {}, rop = {}}
for i, s in ipairs(names) do
  local v = redis.call('HMGET', 'shelfcast:{' .. s .. '}:state',
    'first_bucket', 'lead_time', 'on_hand', 'stock_known', 'alert', 'alert_seq')
  cols.first[i] = v[1]; cols.lead[i] = v[2]; cols.on_hand[i] = v[3]
  cols.known[i] = v[4]; cols.alert[i] = v[5]; cols.seq[i] = v[6]
  -- a raised alert clears only above the previous reorder point too (decide())
  cols.rop[i] = v[5] == 'raised' and redis.call('HGET', KEYS[6], s) or false
end
local b, lookback = tonumber(ARGV[2]), tonumber(ARGV[3])
local past = {}
for j = b - lookback, b - 1 do past[#past + 1] = tostring(j) end
return cjson.encode({
  names = names, cols = cols,
  demand = redis.call('HGETALL', KEYS[4]), revenue = redis.call('HGETALL', KEYS[5]),
  orders = redis.call('HGET', KEYS[3], ARGV[2]) or '0',
  past = past, closed = redis.call('HMGET', KEYS[2], unpack(past)),
})
"""
STATE_FIELDS = ("alert", "alert_seq", "stock_known")
# `shelfcast:part:{p}:rop` values, `|`-separated (the forecast id, which has `|`, last)
ROP_FIELDS = ("rop", "lt_demand", "safety", "daily_mean", "rop_lead", "forecast_id")


def unpack_rop(packed: str) -> dict[str, str]:
    """A ``shelfcast:part:{p}:rop`` value as ROP_FIELDS (all empty when there is none).

    >>> unpack_rop("4.5|3.0|1.5|1.0|3.0|A1@UK|9|tsb@2")["forecast_id"]
    'A1@UK|9|tsb@2'
    """
    values = packed.split("|", len(ROP_FIELDS) - 1) if packed else [""] * len(ROP_FIELDS)
    return dict(zip(ROP_FIELDS, values, strict=True))


# `shelfcast:part:{p}:rolling` values, `|`-separated
ROLLING_FIELDS = ("demand_sum_7", "demand_sum_28", "demand_ewma")


def packed_rows(columns: np.ndarray) -> list[str]:
    """Each row of ``columns [n, k]`` as its numbers joined by ``|`` (NaN as ``nan``), the
    values of the partition's per-series hashes: orjson writes all of them in one call,
    where formatting them one series at a time cost a close about 2 us a series.

    >>> packed_rows(np.array([[1.5, 2.0], [np.nan, 0.25]]))
    ['1.5|2.0', 'nan|0.25']
    """
    if not len(columns):
        return []
    flat = np.ascontiguousarray(columns, np.float64).reshape(len(columns), -1)
    text = orjson.dumps(flat, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    rows = text[2:-2].replace(",", "|").split("]|[")
    return [row.replace("null", "nan") for row in rows] if "null" in text else rows


@dataclass(frozen=True, slots=True)
class CloseFields:
    """What a close writes to its partition's per-series hashes: for the ``published``
    series their reorder points (ROP_FIELDS) and latest forecasts (``stored_forecasts``), for
    every ``series`` its rolling features (ROLLING_FIELDS)."""

    published: list[str]
    rop: list[str]
    forecast: list[str]
    series: list[str]
    rolling: list[str]


@dataclass(frozen=True, slots=True)
class StockEffect:
    """One event as the Lua script sees it."""

    kind: str  # "o" order, "s" snapshot, "d" delta
    series: str
    event_id: str
    bucket: int
    ts_ms: int
    quantity: int
    unit_price: float | None
    offsets_field: str
    offset: int
    partition: int
    lead_time_days: float | None = None
    moves_clock: bool = True  # an order the pipeline holds to be skewed far ahead does not


@dataclass(frozen=True, slots=True)
class Fold:
    """A pending delta that took effect: its partition's stock clock passed its time."""

    before: int  # index of the event it took effect before; len(effects) for after them all
    partition: int
    series: str
    ts_ms: int
    on_hand: int


@dataclass
class ApplyResult:
    statuses: list[int]
    on_hand: list[int | None]
    states: dict[str, dict[str, str]]
    folds: list[Fold]


def series_base(series: str) -> str:
    return f"{PREFIX}:{{{series}}}:"


def part_series_key(partition: int) -> str:
    return f"{PREFIX}:part:{partition}:series"


def part_key(partition: int, what: str) -> str:
    return f"{PREFIX}:part:{partition}:{what}"


@dataclass(frozen=True, slots=True)
class PartitionClose:
    """What a bucket close reads of a partition: its active series (``series``), and per
    series their first bucket (NaN unknown), demand and revenue in the bucket, lead time (NaN:
    the default), stock, whether it is known, whether an alert is raised and its sequence, the
    reorder point the last close stored (NaN unless raised);
    the partition's order count in the bucket and the closed flags before it."""

    series: list[str]
    first: np.ndarray
    demand: np.ndarray
    revenue: np.ndarray
    lead_time: np.ndarray
    on_hand: np.ndarray
    stock_known: np.ndarray
    raised: np.ndarray
    alert_seq: np.ndarray
    previous_rop: np.ndarray  # the reorder point the last close stored, for raised series
    orders: int
    closed: dict[int, bool]

    def rows(self, keep: np.ndarray) -> PartitionClose:
        """Only the series where ``keep``."""
        return PartitionClose(
            [s for s, k in zip(self.series, keep.tolist(), strict=True) if k],
            *(getattr(self, f)[keep] for f in _COLUMNS),
            self.orders,
            self.closed,
        )


_COLUMNS = (
    "first", "demand", "revenue", "lead_time", "on_hand", "stock_known", "raised", "alert_seq",
    "previous_rop",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Window:
    """A partition's series over a span of buckets: demand and revenue ``[series, bucket]``
    (0 where none), and the closed flags known there."""

    demand: np.ndarray
    revenue: np.ndarray
    closed: dict[int, bool]


class FeatureStore:
    def __init__(
        self, client: aioredis.Redis, dedupe_ttl_seconds: int, series_ttl_seconds: int = 90 * 86_400
    ) -> None:
        self.r = client
        self.ttl = dedupe_ttl_seconds
        self.series_ttl = series_ttl_seconds
        self._apply = client.register_script(APPLY_LUA)
        self._close = client.register_script(CLOSE_LUA)
        self._read_close = client.register_script(READ_CLOSE_LUA)

    async def apply(
        self, effects: Sequence[StockEffect], advances: Mapping[int, int] | None = None
    ) -> ApplyResult:
        """Apply ``effects`` in order, then move the stock clocks of ``advances`` (partition ->
        ts_ms) forward, which is how an idle partition's pending deliveries take effect."""
        if not effects and not advances:
            return ApplyResult([], [], {}, [])
        events = [
            [
                e.kind, e.series, e.event_id, e.bucket, e.ts_ms, e.quantity,
                None if e.unit_price is None else repr(e.unit_price),
                e.offsets_field, e.offset, str(e.partition),
                None if e.lead_time_days is None else repr(e.lead_time_days),
                e.moves_clock,
            ]
            for e in effects
        ]  # fmt: skip
        argv: list[object] = [
            self.ttl, MOVES_WINDOW_MS, len(effects), self.series_ttl, orjson.dumps(events)
        ]  # fmt: skip
        for partition, ts_ms in (advances or {}).items():
            argv += [partition, ts_ms]
        metrics.REDIS_ROUNDTRIPS.inc()
        statuses, onhand, flat, folded = await self._apply(keys=[OFFSETS, STATS], args=argv)
        states: dict[str, dict[str, str]] = {}
        width = len(STATE_FIELDS) + 2
        for i in range(0, len(flat), width):
            name = _text(flat[i])
            state = {
                f: _text(v) for f, v in zip(STATE_FIELDS, flat[i + 1 : i + width - 1], strict=True)
            }
            packed = _text(flat[i + width - 1])
            states[name] = {**state, **unpack_rop(packed)}
        return ApplyResult(
            [int(s) for s in statuses],
            [int(v) if v not in (b"", "") else None for v in onhand],
            states,
            [
                Fold(int(b), int(p), _text(s), int(ts), int(on_hand))
                for b, p, s, ts, on_hand in zip(*[iter(folded)] * 5, strict=True)
            ],
        )

    async def load_clock(self) -> dict[str, str]:
        metrics.REDIS_ROUNDTRIPS.inc()
        return {_text(k): _text(v) for k, v in (await self.r.hgetall(CLOCK)).items()}

    async def read_close(
        self, partition: int, since_bucket: int, bucket: int, lookback: int
    ) -> PartitionClose:
        """Partition ``partition``'s series seen at or after ``since_bucket`` and what a close
        of ``bucket`` reads of them, in one script call."""
        keys = [
            part_series_key(partition), part_key(partition, "closed"),
            part_key(partition, "orders"), part_key(partition, f"demand:{bucket}"),
            part_key(partition, f"revenue:{bucket}"), part_key(partition, "rop"),
        ]  # fmt: skip
        metrics.REDIS_ROUNDTRIPS.inc()
        raw = orjson.loads(await self._read_close(keys=keys, args=[since_bucket, bucket, lookback]))
        names = raw["names"] or []  # cjson writes an empty array as {}
        cols = {k: v or [] for k, v in raw["cols"].items()}
        index = pd.Index(names)

        def by_series(flat: list[str] | dict[str, str]) -> np.ndarray:
            out = np.zeros(len(names))
            if flat:
                rows = index.get_indexer(flat[0::2])
                values = np.array(flat[1::2], np.float64)
                out[rows[rows >= 0]] = values[rows >= 0]
            return out

        def column(name: str, missing: float) -> np.ndarray:
            return np.array([missing if v is False else float(v) for v in cols[name]], np.float64)

        closed = {
            int(b): v == "1"
            for b, v in zip(raw["past"] or [], raw["closed"] or [], strict=True)
            if v is not False
        }
        return PartitionClose(
            names,
            column("first", np.nan),
            by_series(raw["demand"]),
            by_series(raw["revenue"]),
            column("lead", np.nan),
            column("on_hand", 0.0).astype(np.int64),
            np.array([v == "1" for v in cols["known"]], bool),
            np.array([v == "raised" for v in cols["alert"]], bool),
            column("seq", 0.0).astype(np.int64),
            np.array([np.nan if v is False else float(v.split("|", 1)[0]) for v in cols["rop"]]),
            int(raw["orders"]),
            closed,
        )

    async def read_partition_snapshot(self, partition: int) -> list[bytes] | None:
        """The partition's model snapshot (models/snapshot.py) in its stored pieces, if any:
        joined by ``unpack`` off the event loop."""
        metrics.REDIS_ROUNDTRIPS.inc()
        chunks: list[bytes] = await self.r.lrange(part_key(partition, "model"), 0, -1)
        return chunks or None

    async def write_partition_snapshot(self, partition: int, blob: bytes) -> None:
        key = part_key(partition, "model")
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(key)
        pipe.rpush(key, *_chunks(blob))
        pipe.expire(key, self.series_ttl)
        metrics.REDIS_ROUNDTRIPS.inc()
        await pipe.execute()

    async def read_window(self, partition: int, series: Sequence[str], span: range) -> Window:
        """Demand and revenue ``[len(series), len(span)]`` of the partition's ``series`` over
        ``span`` (0 where none), and the partition's closed flags there. Read from the
        partition's per-bucket hashes, which list only the series that traded in a bucket:
        two commands a bucket, where reading each series' hashes cost a close about 20 us a
        series before its LSTM could forecast."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hmget(part_key(partition, "closed"), [str(b) for b in span] or ["-"])
        for b in span:
            pipe.hgetall(part_key(partition, f"demand:{b}"))
            pipe.hgetall(part_key(partition, f"revenue:{b}"))
        metrics.REDIS_ROUNDTRIPS.inc()
        raw = await pipe.execute()
        closed = {b: v == b"1" for b, v in zip(span, raw[0], strict=False) if v is not None}
        index = pd.Index([s.encode() for s in series])
        demand = np.zeros((len(series), len(span)))
        revenue = np.zeros((len(series), len(span)))
        for j, (d, r) in enumerate(zip(raw[1::2], raw[2::2], strict=True)):
            for out, values in ((demand, d), (revenue, r)):
                if values:
                    rows = index.get_indexer(list(values))
                    numbers = np.array(list(values.values()), np.float64)
                    out[rows[rows >= 0], j] = numbers[rows >= 0]
        return Window(demand, revenue, closed)

    async def write_close(
        self,
        partition: int,
        bucket: int,
        fields: CloseFields,
        alerts: Sequence[tuple[str, str, int, float]],
        *,
        closed: bool,
        learned: int,
        trim_before: int,
        inactive_before: int,
        clock: dict[str, object],
        evaluation: dict[str, float],
        snapshot: bytes | None,
    ) -> None:
        """Record a close: ``fields`` for the partition's per-series hashes, ``alerts`` the
        series whose alert changed (series, status, seq, ts); the clock, the evaluation
        sums, the snapshot and the trim of the history leaving the window go in the same
        atomic script."""
        argv: list[object] = [
            trim_before, inactive_before, learned, bucket, int(closed), self.series_ttl,
            0, orjson.dumps(clock), orjson.dumps(evaluation), orjson.dumps(alerts),
            *map(orjson.dumps, (fields.published, fields.rop, fields.series, fields.rolling)),
            *map(orjson.dumps, (fields.published, fields.forecast)),
        ]  # fmt: skip
        if snapshot:
            chunks = _chunks(snapshot)
            argv[6] = len(chunks)
            argv += chunks
        keys = [
            part_series_key(partition), CLOCK, STATS, part_key(partition, "closed"),
            part_key(partition, "orders"), EVALUATION, part_key(partition, "model"),
            part_key(partition, f"demand:{trim_before}"),
            part_key(partition, f"revenue:{trim_before}"), part_key(partition, "rop"),
            part_key(partition, "rolling"), part_key(partition, "forecast"),
        ]  # fmt: skip
        metrics.REDIS_ROUNDTRIPS.inc()
        if not await self._close(keys=keys, args=argv):
            log.warning(
                "partition %d: the close of bucket %d was already recorded (or a later one "
                "was); nothing written twice", partition, bucket,
            )  # fmt: skip

    async def write_alert_states(
        self, updates: dict[str, dict[str, object]], walked: Sequence[Fold] = ()
    ) -> None:
        """Record alert states, and that the deliveries ``walked`` no longer owe a walk."""
        if not updates and not walked:
            return
        pipe = self.r.pipeline(transaction=True)
        for s, fields in updates.items():
            pipe.hset(series_base(s) + "state", mapping=fields)  # type: ignore[arg-type]
        for fold in walked:
            pipe.hdel(part_key(fold.partition, "unwalked"), fold.series)
        metrics.REDIS_ROUNDTRIPS.inc()
        await pipe.execute()

    async def count(self, **increments: int) -> None:
        pipe = self.r.pipeline(transaction=False)
        for name, n in increments.items():
            if n:
                pipe.hincrby(STATS, name, n)
        metrics.REDIS_ROUNDTRIPS.inc()
        await pipe.execute()


def _chunks(blob: bytes) -> list[bytes]:
    """A snapshot in pieces of ``SNAPSHOT_CHUNK`` bytes."""
    return [blob[i : i + SNAPSHOT_CHUNK] for i in range(0, len(blob), SNAPSHOT_CHUNK)] or [b""]


def _text(v: object) -> str:
    if v is None:
        return ""
    return v.decode() if isinstance(v, bytes) else str(v)
