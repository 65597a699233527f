"""The Redis feature store: per-series demand buckets, rolling features, stock and alert state.

Every write path is batched: one Lua script (streamer/features/lua) applies a whole segment of a
partition's events atomically; a bucket close reads a partition in one pipelined round trip and
a script call per 2,000 series, and writes it in one transaction and one script. The key layout
is documented in docs/redis-layout.md: every key of a partition carries its hash tag ``{p7}``,
so on a Redis Cluster each call runs on one node."""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
import orjson
import pandas as pd
import redis
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from streamer import metrics
from streamer.config.settings import Settings

# The key scheme is keys.py's and the wire format codec.py's.
from streamer.features.codec import (
    LUA_WIRE,
    OUTBOX_FIELDS,
    SIGNAL_FIELDS,
    AlertRecord,
    Status,
    StockEffect,
    encode_events,
    rop_values,
)
from streamer.features.keys import (
    STATS,
    bucket_key,
    lua_keys,
    part_key,
    part_series_key,
    series_key,
)
from streamer.features.states import KeptStates, StateColumns

__all__ = [
    "MOVES_LEAD_MS",
    "MOVES_WINDOW_MS",
    "SNAPSHOT_CHUNK",
    "ApplyResult",
    "CloseFields",
    "FeatureStore",
    "Fenced",
    "PartitionClose",
    "Window",
    "as_text",
    "summed_evaluation",
    "summed_stats",
]

log = logging.getLogger(__name__)

# Stock movements are kept this long (event time) so an absolute snapshot can be applied on
# top of the movements that came after it; a snapshot older than what its series kept is
# ignored as stale (apply.lua: ``moves_from``).
MOVES_WINDOW_MS = 14 * 86_400_000
# While a partition's orders are applied ahead of its inventory (a backlog read faster on one
# topic), the window counts back from the newest inventory event read there instead, up to this
# much further back: a snapshot stamped among those orders still finds the movements after it.
MOVES_LEAD_MS = 90 * 86_400_000


# A Redis string holds at most 512 MB; and the event loop parses each piece of a reply in one
# go, so pieces stay small enough for that to take a few milliseconds.
SNAPSHOT_CHUNK = 8 << 20

# The partition keys apply.lua takes after the owner, in its order
APPLY_KEYS = (
    "offsets", "stats", "clock", "pending", "series", "orders", "rop", "outbox", "touched",
)  # fmt: skip
# Series a command when a close writes its per-series hashes: each command a few milliseconds
PAIRS_PER_COMMAND = 4_000
# Series a call of read_close.lua: about 10 ms of Redis's time (docs/redis-layout.md)
STATES_PER_CALL = 2_000


def _lua(name: str, *preludes: str) -> str:
    """A script of streamer/features/lua after the shared ``preludes`` it uses: ``fence``,
    which every script that writes a partition's state starts with, and ``scheme``, the key
    scheme and wire format of every script that builds a key or reads a record."""
    folder = resources.files("streamer.features.lua")
    return "".join(folder.joinpath(f"{n}.lua").read_text() for n in (*preludes, name))


class Fenced(Exception):
    """This worker's owner generation of ``partition`` is not the partition's: another worker
    took it over (this one was paused past its session timeout), or Redis lost it (``owner``
    below the caller's, or None). Nothing this call wrote landed."""

    def __init__(self, partition: int, detail: str) -> None:
        super().__init__(f"partition {partition}: {detail}")
        self.partition = partition
        owner = detail.rsplit(" ", 1)[-1]
        self.owner = int(owner) if owner.isdigit() else None


@dataclass(frozen=True, slots=True)
class CloseFields:
    """What a close writes to its partition's per-series hashes: for the ``published``
    series their reorder points (codec.py: ROP_FIELDS) and latest forecasts
    (``stored_forecasts``), for every ``series`` its rolling features (ROLLING_FIELDS)."""

    published: list[str]
    rop: list[str]
    forecast: list[str]
    series: list[str]
    rolling: list[str]


@dataclass
class ApplyResult:
    statuses: list[Status]
    on_hand: list[int | None]
    outbox: list[AlertRecord]


@dataclass(frozen=True, slots=True)
class PartitionClose:
    """What a bucket close reads of a partition: its active series (``series``), and per
    series their first bucket (NaN unknown), demand and revenue in the bucket, lead time (NaN:
    the default), stock, whether it is known, whether an alert is raised and its sequence, the
    reorder point the last close stored (NaN unless raised), stock on order and pack size;
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
    on_order: np.ndarray
    pack_size: np.ndarray  # 0: none
    orders: int
    closed: dict[int, bool]
    # the LSTM version an earlier attempt at this close published with (0: none), if any
    lstm_version: int | None = None

    def rows(self, keep: np.ndarray) -> PartitionClose:
        """Only the series where ``keep``, in name order.

        Every close, live or replayed after a restore, sees a partition's rows in one order:
        sums over rows (the mini-batch gradient of the partition-wide regression, the
        evaluation) round differently in another, and the active set's own order changes
        with every order that comes in.
        """
        index = [i for i, k in enumerate(keep.tolist()) if k]
        index.sort(key=self.series.__getitem__)
        rows = np.array(index, dtype=np.intp)
        return PartitionClose(
            [self.series[i] for i in index],
            *(getattr(self, f)[rows] for f in _COLUMNS),
            self.orders,
            self.closed,
            self.lstm_version,
        )


_COLUMNS = (
    "first", "demand", "revenue", "lead_time", "on_hand", "stock_known", "raised", "alert_seq",
    "previous_rop", "on_order", "pack_size",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Window:
    """A partition's ``series`` over a span of buckets: demand and revenue ``[series,
    bucket]`` (0 where none), where each series had orders (``traded``), the closed flags
    known there, and the customer and promotion signals ``[series, bucket, 5]`` when read."""

    series: list[str]
    demand: np.ndarray
    revenue: np.ndarray
    traded: np.ndarray
    closed: dict[int, bool]
    signals: np.ndarray | None = None


def _signals(index: pd.Index, packed: list[dict[bytes, bytes]]) -> np.ndarray | None:
    """The signals [series, bucket, 5] of the partition's per-bucket signals hashes, in the
    rows of ``index``; None when none were read."""
    if not packed:
        return None
    out = np.zeros((len(index), len(packed), len(SIGNAL_FIELDS)))
    for j, values in enumerate(packed):
        if values:
            rows = index.get_indexer(list(values))
            # one parse a bucket, not one a series: the values are JSON arrays already
            numbers = np.array(orjson.loads(b"[" + b",".join(values.values()) + b"]"), np.float64)
            out[rows[rows >= 0], j] = numbers[rows >= 0]
    return out


class FeatureStore:
    """The worker's Redis: every call touches one partition (one slot on a Redis Cluster),
    and every write is checked against the caller's owner generation of it (``claim``)."""

    def __init__(
        self,
        client: aioredis.Redis,
        dedupe_ttl_seconds: int,
        series_ttl_seconds: int = 90 * 86_400,
        alert_hysteresis: float = 0.5,
        signals: bool = False,
    ) -> None:
        self.r = client
        self.signals = signals  # keep the customer and promotion signals of each order
        self.ttl = dedupe_ttl_seconds
        self.series_ttl = series_ttl_seconds
        self.hysteresis = alert_hysteresis
        self._apply = client.register_script(_lua("apply", "fence", "scheme"))
        self._snapshot = client.register_script(_lua("snapshot", "fence"))
        # sent whole: they run inside a transaction or a pipeline, where no NOSCRIPT is retried
        self._close = _lua("close", "fence", "scheme")
        self._read_close = _lua("read_close", "fence", "scheme")

    @classmethod
    def of(cls, client: aioredis.Redis, settings: Settings) -> FeatureStore:
        return cls(
            client,
            settings.redis.dedupe_ttl_seconds,
            settings.redis.series_ttl_seconds,
            settings.alerts.hysteresis,
            bool(settings.trainer.lstm_signals),
        )

    async def claim(self, partition: int) -> int:
        """Take ``partition`` over: a new owner generation, which every later write of this
        process carries and which fences off the writes of any earlier owner."""
        metrics.REDIS_ROUNDTRIPS.inc()
        return int(await self.r.incr(part_key(partition, "owner")))

    async def _fenced(
        self, script: AsyncScript, partition: int, generation: int, keys: list[str], args: list
    ) -> object:
        metrics.REDIS_ROUNDTRIPS.inc()
        with _fencing(partition):
            return await script(
                keys=[part_key(partition, "owner"), *keys],
                args=[_scheme(partition), generation, *args],
            )

    async def apply(
        self,
        partition: int,
        generation: int,
        effects: Sequence[StockEffect],
        advance_ms: int | None = None,
        delivered: int = 0,
        floor: Mapping[str, int] | None = None,
    ) -> ApplyResult:
        """Apply ``effects`` of ``partition`` in order, then move its stock clock on to
        ``advance_ms`` (an idle partition's pending deliveries take effect so) and its
        offsets to at least ``floor`` (input taken without an effect: dead letters); the
        first ``delivered`` alerts of its outbox were sent and leave it."""
        keys = [part_key(partition, k) for k in APPLY_KEYS]
        args = [
            self.ttl, MOVES_WINDOW_MS, self.series_ttl, repr(self.hysteresis), delivered,
            encode_events(effects), "" if advance_ms is None else advance_ms,
            orjson.dumps(floor or {}), int(self.signals), MOVES_LEAD_MS,
        ]  # fmt: skip
        reply = await self._fenced(self._apply, partition, generation, keys, args)
        statuses, onhand, outbox = reply  # type: ignore[misc]
        return ApplyResult(
            [Status(int(s)) for s in statuses],
            [int(v) if v not in (b"", "") else None for v in onhand],
            [AlertRecord.parse(raw) for raw in outbox],
        )

    async def offsets(self, partition: int) -> dict[str, int]:
        """The next offset the partition's effects hold, per input ``topic:partition``."""
        metrics.REDIS_ROUNDTRIPS.inc()
        values = await self.r.hgetall(part_key(partition, "offsets"))
        return {as_text(k): int(v) for k, v in values.items()}

    async def load_clock(self, partition: int) -> tuple[int | None, float | None]:
        """The partition's last closed bucket and newest event time, if it has them."""
        metrics.REDIS_ROUNDTRIPS.inc()
        closed, max_ts = await self.r.hmget(part_key(partition, "clock"), ["closed", "max_ts"])
        return (
            None if closed is None else int(closed),
            None if max_ts is None else float(max_ts),
        )

    async def read_close(
        self,
        partition: int,
        generation: int,
        since_bucket: int,
        bucket: int,
        lookback: int,
        kept: KeptStates | None = None,
    ) -> PartitionClose:
        """Partition ``partition``'s series seen at or after ``since_bucket`` and what a close
        of ``bucket`` reads of them: one pipelined round trip, and for the states of more than
        ``STATES_PER_CALL`` series a script call per that many after it. With ``kept``, the
        states of only the series touched since its last read, and of those it does not keep
        (streamer/features/states.py). Each series' state is read in one command: a stock
        change applied between two calls (live, an idle partition's close runs beside the
        batches) counts for a series before or after the close, as one applied between a
        close's read and its write always could. Fenced: the read empties the partition's
        touched set."""
        states, whole_at = kept.take(partition) if kept is not None else (None, 0.0)
        past = [str(j) for j in range(bucket - lookback, bucket)]
        pipe = self.r.pipeline(transaction=False)
        wanted = "all" if states is None else "touched"
        self._states(pipe, partition, generation, "since", since_bucket, STATES_PER_CALL, wanted)
        pipe.hgetall(bucket_key(partition, "demand", bucket))
        pipe.hgetall(bucket_key(partition, "revenue", bucket))
        pipe.hget(part_key(partition, "orders"), str(bucket))
        pipe.hmget(part_key(partition, "closed"), past or ["-"])
        pipe.hmget(part_key(partition, "clock"), ["lstm_bucket", "lstm_version"])
        first, demand, revenue, orders, flags, lstm = await _executed(pipe, partition)
        first = orjson.loads(first)
        names = first["names"] or []  # cjson writes an empty array as {}
        fresh = await self._read_states(partition, generation, names, first, states)
        states = fresh.over(states, names)
        if kept is not None:
            kept.keep(partition, states, whole_at)
        index = states.names

        def by_series(values: dict[bytes, bytes]) -> np.ndarray:
            out = np.zeros(len(names))
            if values:
                rows = index.get_indexer([as_text(k) for k in values])
                numbers = np.array([float(v) for v in values.values()])
                out[rows[rows >= 0]] = numbers[rows >= 0]
            return out

        return PartitionClose(
            names,
            states.first,
            by_series(demand),
            by_series(revenue),
            states.lead,
            states.on_hand,
            states.known,
            states.raised,
            states.seq,
            await self._raised_rops(partition, names, states.raised),
            states.on_order,
            states.pack,
            int(orders or 0),
            {int(b): v == b"1" for b, v in zip(past, flags, strict=False) if v is not None},
            int(lstm[1]) if as_text(lstm[0]) == str(bucket) else None,
        )

    def _states(
        self, pipe: aioredis.client.Pipeline, partition: int, generation: int, *args: object
    ) -> None:
        """Queue a call of read_close.lua."""
        keys = [part_key(partition, k) for k in ("owner", "series", "touched")]
        pipe.eval(self._read_close, len(keys), *keys, _scheme(partition), generation, *args)

    async def _read_states(
        self,
        partition: int,
        generation: int,
        names: list[str],
        first: dict,
        kept: StateColumns | None,
    ) -> StateColumns:
        """The states read_close.lua's ``first`` reply holds, or else those of the touched
        series and of any not ``kept``, read in a call per ``STATES_PER_CALL`` series."""
        if "cols" in first:
            return StateColumns.parse(names, first["cols"])
        if kept is None:
            wanted = names
        else:
            touched = pd.Index(first["touched"] or [], dtype=object)
            index = pd.Index(names, dtype=object)
            again = index.isin(touched) | (kept.names.get_indexer(index) < 0)
            wanted = index[again].tolist()
        cols: dict[str, list] = defaultdict(list)
        for lo in range(0, len(wanted), STATES_PER_CALL):
            pipe = self.r.pipeline(transaction=False)
            self._states(pipe, partition, generation, "series", *wanted[lo : lo + STATES_PER_CALL])
            reply = orjson.loads((await _executed(pipe, partition))[0])
            for k, v in reply["cols"].items():
                cols[k].extend(v or [])
        return StateColumns.parse(wanted, cols)

    async def _raised_rops(
        self, partition: int, names: list[str], raised: np.ndarray
    ) -> np.ndarray:
        """The reorder point each raised alert came from (NaN elsewhere): a raised alert clears
        only above it too (alerts/outbox.py)."""
        out = np.full(len(names), np.nan)
        rows = np.flatnonzero(raised)
        if not len(rows):
            return out
        pipe = self.r.pipeline(transaction=False)
        for lo in range(0, len(rows), PAIRS_PER_COMMAND):
            pipe.hmget(
                part_key(partition, "rop"), [names[i] for i in rows[lo : lo + PAIRS_PER_COMMAND]]
            )
        metrics.REDIS_ROUNDTRIPS.inc()
        packed = [as_text(v) for chunk in await pipe.execute() for v in chunk]
        out[rows] = rop_values([v or False for v in packed])
        return out

    async def begin_close(
        self,
        partition: int,
        generation: int,
        bucket: int,
        version: int,
        delivered: int,
        alerts: Sequence[bytes],
    ) -> list[AlertRecord] | None:
        """Before a close's outputs leave: None when the close of ``bucket`` is recorded
        already (send nothing). Else, on its first attempt, record that it publishes with
        LSTM ``version`` (0: none) and decided ``alerts`` (outbox entries, ``outbox_entry``),
        and return the outbox to send: a retry after a failed write or a crash sends the
        same alerts and republishes the same forecasts, whatever the stock or the trainer did
        meanwhile. The first ``delivered`` alerts of the outbox were sent and leave it.

        One transaction that lands only while ``generation`` owns the partition, of plain
        commands, as ``write_close``'s and for its reason: a close that raises an alert on
        each of a large partition's series passes each one's record."""
        clock, outbox = part_key(partition, "clock"), part_key(partition, "outbox")
        begun = False

        async def begin(pipe: aioredis.client.Pipeline) -> None:
            nonlocal begun
            closed, lstm_bucket, alerts_bucket = await _owned_clock(
                pipe, partition, generation, "closed", "lstm_bucket", "alerts_bucket"
            )
            pipe.multi()
            if delivered > 0:
                pipe.ltrim(outbox, delivered, -1)
            begun = closed is None or int(closed) < bucket
            if not begun:
                return
            if as_text(lstm_bucket) != str(bucket):
                pipe.hset(clock, mapping={"lstm_bucket": bucket, "lstm_version": version})
                if version > 0:
                    pipe.hset(part_key(partition, "lstm"), str(bucket), version)
            if as_text(alerts_bucket) != str(bucket):
                pipe.hset(clock, "alerts_bucket", bucket)
                _record_alerts(pipe, partition, alerts)
            pipe.lrange(outbox, 0, -1)

        replies = await self._watched(partition, begin)
        return [AlertRecord.parse(raw) for raw in replies[-1]] if begun else None

    async def read_lstm_served(self, partition: int, span: range) -> dict[int, int]:
        """The LSTM version each close of ``span`` published with, where one did."""
        if not len(span):
            return {}
        metrics.REDIS_ROUNDTRIPS.inc()
        raw = await self.r.hmget(part_key(partition, "lstm"), [str(b) for b in span])
        return {b: int(v) for b, v in zip(span, raw, strict=True) if v is not None}

    async def read_partition_snapshot(self, partition: int) -> list[bytes] | None:
        """The partition's model snapshot (models/snapshot.py) in its stored pieces, if any:
        joined by ``unpack`` off the event loop."""
        metrics.REDIS_ROUNDTRIPS.inc()
        chunks: list[bytes] = await self.r.lrange(part_key(partition, "model"), 0, -1)
        return chunks or None

    async def write_partition_snapshot(self, partition: int, generation: int, blob: bytes) -> None:
        keys = [part_key(partition, "model")]
        await self._fenced(
            self._snapshot, partition, generation, keys, [self.series_ttl, *_chunks(blob)]
        )

    async def read_window(
        self,
        partition: int,
        series: Sequence[str],
        span: range,
        flags_before: int = 0,
        *,
        all_traded: bool = False,
        signals: bool = False,
    ) -> Window:
        """Demand and revenue ``[len(series), len(span)]`` of the partition's ``series`` over
        ``span`` (0 where none), and the partition's closed flags there and over the
        ``flags_before`` buckets before it (a replayed close expects days closed from the
        flags of the weeks before it, as the live close did). With ``all_traded``, the rows
        are ``series`` and every other series that traded in ``span`` (one that has left the
        active set since), in name order. With ``signals``, the customer and promotion
        signals too (an LSTM that reads them). Read from the partition's per-bucket hashes, which
        list only the series that traded in a bucket: two commands a bucket, where reading
        each series' hashes cost a close about 20 us a series before its LSTM could
        forecast."""
        flagged = range(span.start - flags_before, span.stop)
        pipe = self.r.pipeline(transaction=False)
        pipe.hmget(part_key(partition, "closed"), [str(b) for b in flagged] or ["-"])
        for b in span:
            pipe.hgetall(bucket_key(partition, "demand", b))
            pipe.hgetall(bucket_key(partition, "revenue", b))
        for b in span if signals else ():
            pipe.hgetall(bucket_key(partition, "signals", b))
        metrics.REDIS_ROUNDTRIPS.inc()
        raw = await pipe.execute()
        packed = raw[len(raw) - len(span) :] if signals else []
        raw = raw[: 1 + 2 * len(span)]
        closed = {b: v == b"1" for b, v in zip(flagged, raw[0], strict=False) if v is not None}
        if all_traded:
            names = {name.decode() for d in raw[1::2] for name in d}
            series = sorted(names.union(series))
        index = pd.Index([s.encode() for s in series])
        shape = (len(series), len(span))
        demand, revenue, traded = np.zeros(shape), np.zeros(shape), np.zeros(shape, bool)
        for j, (d, r) in enumerate(zip(raw[1::2], raw[2::2], strict=True)):
            for out, values in ((demand, d), (revenue, r)):
                if values:
                    rows = index.get_indexer(list(values))
                    numbers = np.array(list(values.values()), np.float64)
                    out[rows[rows >= 0], j] = numbers[rows >= 0]
                    if values is d:  # listed: had orders, even all cancelled in the bucket
                        traded[rows[rows >= 0], j] = True
        return Window(list(series), demand, revenue, traded, closed, _signals(index, packed))

    async def write_close(
        self,
        partition: int,
        generation: int,
        bucket: int,
        fields: CloseFields,
        *,
        closed: bool,
        learned: int,
        trim_before: int,
        inactive_before: int,
        max_ts: float,
        evaluation: dict[str, float],
        snapshot: bytes | None,
    ) -> None:
        """Record a close, atomically: ``fields`` into the partition's per-series hashes, and
        the clock, the evaluation sums, the snapshot and the trim of the history leaving the
        window (close.lua; its alerts were recorded by ``begin_close``). Nothing is written
        when the close of ``bucket`` or a later one is recorded already.

        One transaction that lands only while ``generation`` owns the partition: the
        per-series values go by plain commands, a few thousand series each, the rest by the
        script. Lua interns every string it handles, and a partition's values differ in few
        of the characters its string hash samples: a script writing 125,000 of them ran 5-7 s
        in the table's collision chains, past Redis's busy threshold (docs/redis-layout.md)."""
        chunks = _chunks(snapshot) if snapshot else []
        args: list[object] = [
            _scheme(partition), generation, trim_before, inactive_before, learned, bucket,
            int(closed), self.series_ttl, len(chunks),
            orjson.dumps({"closed": bucket, "max_ts": max_ts}), orjson.dumps(evaluation),
            *chunks,
        ]  # fmt: skip
        keys = [
            part_key(partition, "owner"), part_series_key(partition), *(
                part_key(partition, k)
                for k in ("clock", "stats", "closed", "orders", "evaluation", "model")
            ),
            bucket_key(partition, "demand", trim_before),
            bucket_key(partition, "revenue", trim_before),
            *(part_key(partition, k) for k in ("rop", "rolling", "forecast", "lstm")),
            bucket_key(partition, "signals", trim_before),
        ]  # fmt: skip
        sections = {
            "rop": (fields.published, fields.rop), "rolling": (fields.series, fields.rolling),
            "forecast": (fields.published, fields.forecast),
        }  # fmt: skip

        async def write(pipe: aioredis.client.Pipeline) -> None:
            (recorded,) = await _owned_clock(pipe, partition, generation, "closed")
            pipe.multi()
            if recorded is None or int(recorded) < bucket:
                _queue_per_series(pipe, partition, sections)
            pipe.eval(self._close, len(keys), *keys, *args)

        replies = await self._watched(partition, write)
        if not replies[-1]:
            log.warning(
                "partition %d: the close of bucket %d was already recorded (or a later one "
                "was); nothing written twice", partition, bucket,
            )  # fmt: skip

    async def _watched(
        self, partition: int, queue: Callable[[aioredis.client.Pipeline], Awaitable[None]]
    ) -> list:
        """The replies of the transaction ``queue`` fills (it starts with ``_owned_clock``),
        with the partition's owner and clock watched: a stock change applied meanwhile moves
        the clock too, and then ``queue`` reads it again."""
        owner, clock = part_key(partition, "owner"), part_key(partition, "clock")
        replies = await self.r.transaction(queue, owner, clock)
        metrics.REDIS_ROUNDTRIPS.inc()  # the EXEC; the watch and the read count in _owned_clock
        return replies

    async def count(self, **increments: int) -> None:
        pipe = self.r.pipeline(transaction=False)
        for name, n in increments.items():
            if n:
                pipe.hincrby(STATS, name, n)
        metrics.REDIS_ROUNDTRIPS.inc()
        await pipe.execute()


# The owner and clock fields a watched transaction checks, in one round trip
_OWNED_CLOCK = (
    "return {redis.call('GET', KEYS[1]) or false, redis.call('HMGET', KEYS[2], unpack(ARGV))}"
)


async def _owned_clock(
    pipe: aioredis.client.Pipeline, partition: int, generation: int, *fields: str
) -> list[bytes | None]:
    """In a transaction watching the partition's owner and clock: the clock's ``fields``,
    once it is sure that ``generation`` owns the partition (what fence.lua checks)."""
    metrics.REDIS_ROUNDTRIPS.inc(2)  # the watch, and this
    keys = (part_key(partition, "owner"), part_key(partition, "clock"))
    held, values = await pipe.eval(_OWNED_CLOCK, 2, *keys, *fields)
    if held is None or int(held) != generation:
        raise Fenced(partition, f"partition owned by generation {as_text(held) or 'none'}")
    return values


def _queue_per_series(
    pipe: aioredis.client.Pipeline,
    partition: int,
    sections: Mapping[str, tuple[list[str], list[str]]],
) -> None:
    """Queue each ``sections`` hash's values by series, ``PAIRS_PER_COMMAND`` a command.

    Each command's arguments are interleaved by two slice assignments, 0.17 us a series; a
    mapping for ``hset``, which redis-py flattens again, took 0.6 with the interpreter lock
    held."""
    for name, (series, values) in sections.items():
        for lo in range(0, len(series), PAIRS_PER_COMMAND):
            hi = lo + PAIRS_PER_COMMAND
            pairs: list[str] = [""] * (2 * len(series[lo:hi]))
            pairs[0::2], pairs[1::2] = series[lo:hi], values[lo:hi]
            pipe.execute_command("HSET", part_key(partition, name), *pairs)


def _record_alerts(pipe: aioredis.client.Pipeline, partition: int, alerts: Sequence[bytes]) -> None:
    """Queue a close's ``alerts`` (outbox entries): each series' alert state, the reorder
    point it came from (the alert walk of a stock change before the close is recorded
    compares with it), and the outbox."""
    rops: dict[str, str] = {}
    for raw in alerts:
        a = dict(zip(OUTBOX_FIELDS, orjson.loads(raw), strict=False))
        pipe.hset(
            series_key(a["series"], partition, "state"),
            mapping={
                "alert": a["status"], "alert_seq": a["seq"],
                "alert_ts": "%.17g" % (a["ts_ms"] / 1000),
            },
        )  # fmt: skip
        rops[a["series"]] = a["rop"]
    _queue_per_series(pipe, partition, {"rop": (list(rops), list(rops.values()))})
    names = list(rops)  # their states changed: a worker that keeps states reads them again
    for lo in range(0, len(names), PAIRS_PER_COMMAND):
        pipe.sadd(part_key(partition, "touched"), *names[lo : lo + PAIRS_PER_COMMAND])
    for lo in range(0, len(alerts), PAIRS_PER_COMMAND):
        pipe.rpush(part_key(partition, "outbox"), *alerts[lo : lo + PAIRS_PER_COMMAND])


def summed_stats(client: redis.Redis, partitions: int) -> dict[str, int]:
    """The counters of the process (``shelfcast:stats``) and of every partition, summed."""
    return {k: int(v) for k, v in _summed(client, STATS, "stats", partitions).items()}


def summed_evaluation(client: redis.Redis, partitions: int) -> dict[str, float]:
    """Every partition's prequential error sums, added up (models/evaluation.py)."""
    return _summed(client, None, "evaluation", partitions)


def _summed(client: redis.Redis, first: str | None, what: str, partitions: int) -> dict[str, float]:
    keys = [first] if first else []
    keys += [part_key(p, what) for p in range(partitions)]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    total: dict[str, float] = {}
    for values in pipe.execute():
        for k, v in values.items():
            name = as_text(k)
            total[name] = total.get(name, 0.0) + float(v)
    return total


@contextmanager
def _fencing(partition: int) -> Iterator[None]:
    """A script's refusal of a caller that no longer owns ``partition``, as ``Fenced``."""
    try:
        yield
    except ResponseError as exc:
        # a pipeline's error names the command before the script's own words
        refused = re.search(r"FENCED [\w ]*", str(exc))
        if refused:
            raise Fenced(partition, refused.group()) from None
        raise


async def _executed(pipe: aioredis.client.Pipeline, partition: int) -> list:
    """The replies of ``pipe``, whose scripts are fenced."""
    metrics.REDIS_ROUNDTRIPS.inc()
    with _fencing(partition):
        return await pipe.execute()


@cache
def _scheme(partition: int) -> bytes:
    """What every script of ``partition`` takes first: its key scheme and the wire format
    (streamer/features/lua/scheme.lua)."""
    return orjson.dumps({"keys": lua_keys(partition), "wire": LUA_WIRE})


def _chunks(blob: bytes) -> list[bytes]:
    """A snapshot in pieces of ``SNAPSHOT_CHUNK`` bytes."""
    return [blob[i : i + SNAPSHOT_CHUNK] for i in range(0, len(blob), SNAPSHOT_CHUNK)] or [b""]


def as_text(v: object) -> str:
    """A Redis reply value as text ('' for none)."""
    if v is None:
        return ""
    return v.decode() if isinstance(v, bytes) else str(v)
