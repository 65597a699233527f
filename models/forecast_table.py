"""Forecast messages as columns: read once, then scored and replayed as array programs.

A year of backtest forecasts is millions of messages of seven steps each. Scored message by
message in Python they took minutes per pass, and a backtest made four passes; as columns a
pass is a few array operations.

>>> table = ForecastTable.read([
...     {"forecast_id": "a@x|3|tsb@1", "horizon": [{"mean": 2.0, "p10": 1.0, "p50": 2.0,
...                                                "p90": 4.0}]},
...     {"forecast_id": "a@*|3|rollup@1", "horizon": []},
... ])
>>> table.series, table.models, table.issued.tolist(), table.lengths.tolist()
(['a@x', 'a@*'], ['tsb', 'rollup'], [3, 3], [1, 0])
>>> table.steps[0, 0].tolist()
[2.0, 1.0, 2.0, 4.0]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter

import numpy as np

__all__ = ["FIELDS", "ForecastTable", "TableBuilder", "parse_forecast_id"]

FIELDS = ("mean", "p10", "p50", "p90")  # the last axis of ForecastTable.steps
_CHUNK = 1 << 16  # rows collected before they become arrays
_STEP = itemgetter(*FIELDS)


def parse_forecast_id(forecast_id: str) -> tuple[str, int, str]:
    """``series|bucket|model@version`` split into series, issue bucket and model.

    >>> parse_forecast_id("a|b@UK|12|holt_winters@river-hw-1")
    ('a|b@UK', 12, 'holt_winters')
    """
    series, bucket, model = forecast_id.rsplit("|", 2)
    return series, int(bucket), model.split("@", 1)[0]


@dataclass(frozen=True, slots=True)
class ForecastTable:
    """One row per forecast message: the series and model as indices into ``series`` and
    ``models``, the bucket it was issued at, and its steps ``[rows, horizon, FIELDS]`` as
    float32 (NaN past ``lengths``; the topic's values have 4 decimals, and float32 holds
    them to about 1e-7 relative, so a truth equal to a quantile can fall on either side of
    it). ``first_copy`` is False on a redelivered copy of a forecast id (after a restart it
    may differ: the first copy is the one that counts)."""

    series: list[str]
    models: list[str]
    sid: np.ndarray  # int32
    model: np.ndarray  # int16
    issued: np.ndarray  # int64
    lengths: np.ndarray  # int16
    steps: np.ndarray  # float32
    first_copy: np.ndarray  # bool

    @classmethod
    def read(cls, forecasts: Iterable[Mapping[str, object]]) -> ForecastTable:
        """One pass over ``forecasts`` (a list, or ``JsonLines`` over a topic's copy)."""
        builder = TableBuilder()
        for f in forecasts:
            builder.add(f)
        return builder.table()

    def __len__(self) -> int:
        return len(self.sid)

    def model_index(self, name: str) -> int:
        """The index of model ``name`` (-1: no forecast of it)."""
        return self.models.index(name) if name in self.models else -1


class TableBuilder:
    """A ``ForecastTable`` built a message at a time (a backtest's collector fills it while
    the replay runs). It collects a chunk of rows as flat lists and turns each chunk into
    arrays at once: a numpy assignment per message would cost more than reading it."""

    def __init__(self) -> None:
        self.horizon = 0  # the longest forecast so far: a chunk is as wide as its longest
        self.series: dict[str, int] = {}
        self.models: dict[str, int] = {}
        self.seen: set[int] = set()
        self.done: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._fresh()

    def _fresh(self) -> None:
        self.meta: list[int] = []  # sid, model, issued, length, first copy: per row
        self.values: list[float] = []  # FIELDS of each step, row after row

    def add(self, forecast: Mapping[str, object]) -> None:
        forecast_id = str(forecast["forecast_id"])
        series, bucket, model = parse_forecast_id(forecast_id)
        steps: list[Mapping[str, float]] = forecast["horizon"]  # type: ignore[assignment]
        self.horizon = max(self.horizon, len(steps))
        key = hash(forecast_id)
        self.meta += (
            self.series.setdefault(series, len(self.series)),
            self.models.setdefault(model, len(self.models)),
            bucket,
            len(steps),
            key not in self.seen,
        )
        self.seen.add(key)
        self.values.extend(chain.from_iterable(map(_STEP, steps)))
        if len(self.meta) >= _CHUNK * 5:
            self._flush()

    def _flush(self) -> None:
        meta = np.array(self.meta, np.int64).reshape(-1, 5)
        steps = np.full((len(meta), self.horizon, len(FIELDS)), np.nan, np.float32)
        filled = np.arange(self.horizon) < meta[:, 3:4]
        steps[filled] = np.array(self.values, np.float32).reshape(-1, len(FIELDS))
        self.done.append((meta[:, :4], meta[:, 4].astype(bool), steps))
        self._fresh()

    def _widened(self, steps: np.ndarray) -> np.ndarray:
        """A chunk of forecasts shorter than the longest, NaN-padded to its width."""
        short = self.horizon - steps.shape[1]
        return (
            steps
            if not short
            else np.pad(steps, ((0, 0), (0, short), (0, 0)), constant_values=np.nan)
        )

    def table(self) -> ForecastTable:
        """The table of every message added; the builder lets go of them (a year of
        forecasts is held once)."""
        self._flush()
        done, self.done, self.seen = self.done, [], set()
        meta = np.concatenate([m for m, _, _ in done])
        return ForecastTable(
            series=list(self.series),
            models=list(self.models),
            sid=meta[:, 0].astype(np.int32),
            model=meta[:, 1].astype(np.int16),
            issued=meta[:, 2],
            lengths=meta[:, 3].astype(np.int16),
            steps=np.concatenate([self._widened(s) for _, _, s in done]),
            first_copy=np.concatenate([f for _, f, _ in done]),
        )
