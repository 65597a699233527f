"""The LSTM's input windows, kept between closes and read from Redis a bucket at a time.

At each close the LSTM reads the last ``seq_len`` buckets of every series of the partition.
Read whole, that is two hashes of every bucket of the window, and over a full-year replay
it cost the worker about as much as the network's forward pass (py-spy,
docs/benchmark.md). The window of the next close overlaps this one in all but its newest
bucket, and a closed bucket's hashes change only when a late order lands in it: so each
partition keeps its last window, every series that traded in it as a row, and reads only the
buckets it moved on by (the closed flags of the whole span still, one field each: the flag
of a bucket is written when it closes, after the window of that close was read).

Demand and revenue are kept as float32, what the network reads (``LSTMServing.steps`` casts
them first): 504 bytes a traded series where float64 took 952, and the same forecasts.

The pipeline ``forget``s a partition's window when it applies a late order to it and when it
loses or regains the partition (another worker may have written it meanwhile).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from streamer.features.store import FeatureStore, Window

__all__ = ["WindowCache"]


@dataclass(frozen=True, slots=True)
class _Kept:
    span: range
    names: pd.Index  # every series that traded in the span, a row each
    demand: np.ndarray  # [names, span], float32
    revenue: np.ndarray  # float32
    traded: np.ndarray

    def rows(self, series: list[str], closed: dict[int, bool]) -> Window:
        """The window of ``series`` (zero rows for those that did not trade)."""
        index = self.names.get_indexer(pd.Index(series))
        found = index >= 0

        def take(values: np.ndarray) -> np.ndarray:
            out = np.zeros((len(series), values.shape[1]), values.dtype)
            out[found] = values[index[found]]
            return out

        return Window(
            list(series), take(self.demand), take(self.revenue), take(self.traded), closed
        )


class WindowCache:
    """Each partition's last LSTM window (``read``), moved on by the buckets it is behind."""

    def __init__(self) -> None:
        self._kept: dict[int, _Kept] = {}

    def forget(self, partition: int) -> None:
        """Read the partition's next window whole: its hashes changed behind the cache."""
        self._kept.pop(partition, None)

    async def read(
        self, store: FeatureStore, partition: int, series: list[str], span: range
    ) -> Window:
        """What ``store.read_window(partition, series, span)`` reads (demand and revenue as
        float32), from as few buckets as the last window allows."""
        kept = self._kept.get(partition)
        if kept is None or not kept.span.start <= span.start < kept.span.stop <= span.stop:
            whole = await store.read_window(partition, [], span, all_traded=True)
            kept = _kept(span, whole)
            self._kept[partition] = kept
            return kept.rows(series, whole.closed)
        new = range(kept.span.stop, span.stop)  # empty when a retried close reads it again
        fresh = await store.read_window(
            partition, [], new, flags_before=new.start - span.start, all_traded=True
        )
        kept = _moved(kept, span, fresh)
        self._kept[partition] = kept
        return kept.rows(series, fresh.closed)


def _kept(span: range, window: Window) -> _Kept:
    demand, revenue = window.demand.astype(np.float32), window.revenue.astype(np.float32)
    return _Kept(span, pd.Index(window.series), demand, revenue, window.traded)


def _moved(kept: _Kept, span: range, fresh: Window) -> _Kept:
    """``kept`` moved on to ``span``: its overlap with it, then the ``fresh`` buckets, over
    the series that traded in either; a series that no longer traded in the span leaves."""
    skip = span.start - kept.span.start
    names = kept.names.union(pd.Index(fresh.series))
    parts = []
    for old, new in (
        (kept.demand, fresh.demand),
        (kept.revenue, fresh.revenue),
        (kept.traded, fresh.traded),
    ):
        out = np.zeros((len(names), len(span)), old.dtype)
        out[names.get_indexer(kept.names), : old.shape[1] - skip] = old[:, skip:]
        out[names.get_indexer(pd.Index(fresh.series)), old.shape[1] - skip :] = new
        parts.append(out)
    demand, revenue, traded = parts
    stays = traded.any(axis=1)
    return _Kept(span, names[stays], demand[stays], revenue[stays], traded[stays])
