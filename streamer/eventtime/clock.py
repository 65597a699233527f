"""Event-time buckets and per-partition watermarks.

A partition's watermark is the newest event time seen minus the allowed lateness. Bucket ``b``
covers ``[b * size, (b + 1) * size)`` and closes once the watermark reaches its end.

>>> bucket_of(86_400 * 3 + 5, 86_400)
3
>>> last_closable(max_ts=86_400 * 4 + 3_600, lateness=3_600, size=86_400)
3
>>> last_closable(max_ts=86_400 * 4 + 3_599, lateness=3_600, size=86_400)
2
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime

__all__ = [
    "DAY_SECONDS",
    "bucket_label",
    "bucket_of",
    "bucket_start",
    "epoch",
    "iso",
    "last_closable",
]

DAY_SECONDS: int = 86_400  # the one definition; every daily bucket size and day count uses it


def bucket_of(ts: float, size: int) -> int:
    return int(ts // size)


def bucket_start(bucket: int, size: int) -> float:
    return float(bucket * size)


def last_closable(max_ts: float, lateness: float, size: int) -> int:
    """The newest bucket whose end the watermark has reached."""
    return int((max_ts - lateness) // size) - 1


@functools.lru_cache(maxsize=65_536)  # a close formats the same few times for every series
def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def epoch(text: str) -> float:
    """Epoch seconds of an ISO 8601 time as ``iso`` writes it (and any with an offset).

    >>> epoch(iso(1_294_135_200.5))
    1294135200.5
    """
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def bucket_label(size: int) -> str:
    """'1d', '1h' or '<n>s': the ``bucket`` field of a forecast."""
    if size % DAY_SECONDS == 0:
        return f"{size // DAY_SECONDS}d"
    if size % 3_600 == 0:
        return f"{size // 3_600}h"
    return f"{size}s"
