"""The Redis key scheme of the feature store (docs/redis-layout.md), defined once.

Python builds keys with these functions, and the Lua scripts take the same scheme with their
first argument (``lua_keys``): neither side spells a key the other has to match. Every key of
a partition carries its hash tag ``{pP}``, so on a Redis Cluster each script, which touches
one partition, runs on one node.
"""

from __future__ import annotations

__all__ = [
    "PARTITION_BUCKET_KEYS",
    "PREFIX",
    "SERIES_BUCKET_KEYS",
    "SERIES_HISTORY",
    "SERIES_KEYS",
    "SERIES_SIGNALS",
    "SERIES_STOCK",
    "STATS",
    "bucket_key",
    "is_series_bucket_key",
    "lua_keys",
    "part_key",
    "part_series_key",
    "partition_prefix",
    "series_base",
    "series_bucket_pattern",
    "series_key",
]

PREFIX = "shelfcast"
# Counters of the process, not of a partition (events done, dead letters, outputs): plain
# commands on one key. Everything a script writes is per partition, summed when read.
STATS = f"{PREFIX}:stats"

# A series' hashes of the history (bucket -> value), trimmed by a close as a bucket leaves it
SERIES_HISTORY = ("demand", "returns", "lines", "revenue", "cancelled")
# A series' stock keys, which a stock event reads and writes
SERIES_STOCK = ("state", "moves", "po")
# A series' customer and promotion signals by bucket, and its customers (each one's latest
# bucket and units there; models.signals): written, and so expired, only with
# SHELFCAST_LSTM_SIGNALS on, so that off, an event costs what it did before them
SERIES_SIGNALS = ("signals", "buyers")
# Every key of a series but the per-bucket ones: each expires after the series ttl
SERIES_KEYS = (*SERIES_STOCK, *SERIES_HISTORY, *SERIES_SIGNALS)
# A series' keys per bucket: order sizes (to match a cancellation) and event ids (dedupe)
SERIES_BUCKET_KEYS = ("sizes", "ids")
# The partition's keys per bucket: its demand, revenue and signals there by series
PARTITION_BUCKET_KEYS = ("demand", "revenue", "signals")

_MARK = "\0"  # stands in for a series name or bucket, to cut a key where the scripts fill one in


def partition_prefix(partition: int | str) -> str:
    """Every key of a partition starts so: its hash tag puts them in one Redis Cluster slot,
    so each script, which touches one partition, runs on one node. (``"*"``: any partition,
    in a ``SCAN`` pattern.)"""
    return f"{PREFIX}:{{p{partition}}}:"


def part_key(partition: int, what: str) -> str:
    return partition_prefix(partition) + what


def part_series_key(partition: int) -> str:
    """The partition's active series."""
    return part_key(partition, "series")


def bucket_key(partition: int, name: str, bucket: int | str) -> str:
    """A per-bucket key of the partition (``PARTITION_BUCKET_KEYS``)."""
    return part_key(partition, _per_bucket(name, bucket))


def series_base(series: str, partition: int | str) -> str:
    return f"{partition_prefix(partition)}s:{series}:"


def series_key(
    series: str, partition: int | str, name: str, bucket: int | str | None = None
) -> str:
    """A key of ``series`` (``SERIES_KEYS``; with a bucket, ``SERIES_BUCKET_KEYS``)."""
    return series_base(series, partition) + (name if bucket is None else _per_bucket(name, bucket))


def _per_bucket(name: str, bucket: int | str) -> str:
    return f"{name}:{bucket}"


def lua_keys(partition: int) -> dict[str, object]:
    """The partition's key scheme as its scripts take it (streamer/features/lua/scheme.lua):
    a series key is ``series`` + the series name +
    ``names[name]`` (+ the bucket for a per-bucket name), a partition's per-bucket key
    ``buckets[name]`` + the bucket; and the lists of series keys a script expires or trims.
    """
    head = series_base(_MARK, partition).split(_MARK)[0]
    names = {n: series_key(_MARK, partition, n).split(_MARK)[1] for n in SERIES_KEYS}
    for n in SERIES_BUCKET_KEYS:
        names[n] = series_key(_MARK, partition, n, _MARK).split(_MARK)[1]
    buckets = {n: bucket_key(partition, n, _MARK).split(_MARK)[0] for n in PARTITION_BUCKET_KEYS}
    return {
        "series": head,
        "names": names,
        "buckets": buckets,
        "expire": (*SERIES_STOCK, *SERIES_HISTORY),
        "signals": SERIES_SIGNALS,
        "stock": SERIES_STOCK,
        "history": SERIES_HISTORY,
    }


def series_bucket_pattern(name: str) -> str:
    """A ``SCAN`` pattern of the per-bucket keys ``name`` of every series and partition: it
    also matches other keys of a series whose name holds ``:{name}:``, which
    ``is_series_bucket_key`` tells apart.

    >>> series_bucket_pattern("ids")
    'shelfcast:{p*}:s:*:ids:*'
    """
    return series_key("*", "*", name, "*")


def is_series_bucket_key(key: str, name: str) -> bool:
    """Whether ``key`` is a series' per-bucket key ``name`` (``SERIES_BUCKET_KEYS``). A series
    name may hold ':', so a pattern over the whole key could take another key of that series.

    >>> is_series_bucket_key(series_key("a:ids:3@UK", 0, "ids", 7), "ids")
    True
    >>> [is_series_bucket_key(series_key("a:ids:3@UK", 0, k), "ids") for k in ("state", "po")]
    [False, False]
    >>> is_series_bucket_key(series_key("b@UK:ids", 0, "sizes", 7), "ids")
    False
    """
    _, kind, bucket = key.rsplit(":", 2)
    return kind == name and bucket.isdigit()
