"""The one protocol every shelfcast model implements: all series of a partition as arrays.

Like river's ``time_series.base.Forecaster``, a model learns one observation at a time and
forecasts a horizon of point values, except that "one observation" is one closed bucket of
*every* series of a partition at once: row ``i`` of every array is series ``i``. A close is
one call per model, never one per series, so a partition of a million series costs a few
array operations (docs/forecasting.md).

A bucket in which the shop was closed has no observation: ``Close.open`` is False. A closed
day is not a day of zero demand, so a model must not learn it as one; it only lets time pass.
The closed flag belongs to the partition (a partition holds many series, so an open shop
always sells something in it), hence one flag for all rows.

Series join and leave by row: ``Columns.take`` keeps the rows a close still has and appends
fresh ones. ``state()`` and ``load()`` carry a model through a restart as plain arrays (no
pickle), so a restored model forecasts exactly what the uninterrupted one would have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = ["SEASON", "Close", "Columns", "Forecaster", "State"]

State = dict[str, np.ndarray]
SEASON = 7  # daily buckets: the seasonal naive repeats the same weekday a week earlier


@dataclass(frozen=True, slots=True)
class Close:
    """One closed bucket of a partition, as every model sees it.

    ``y`` and ``price`` have one value per row; ``price`` is NaN where nothing sold.
    ``ahead_weekday`` and ``ahead_closed`` describe the ``horizon`` buckets after ``bucket``,
    as known now.
    """

    bucket: int
    open: bool
    y: np.ndarray
    price: np.ndarray
    weekday: int
    ahead_weekday: np.ndarray
    ahead_closed: np.ndarray

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def horizon(self) -> int:
        return len(self.ahead_weekday)


class Columns:
    """Arrays with one row per series, each with the value a new row starts from.

    >>> c = Columns()
    >>> c.column("level", 0.0, (2,))
    >>> c.take(np.array([-1, -1]))  # two new rows
    >>> c.level[1, 0] = 5.0
    >>> c.take(np.array([1, -1]))  # keep row 1 first, then one new row
    >>> c.level.tolist()
    [[5.0, 0.0], [0.0, 0.0]]
    """

    def __init__(self) -> None:
        self._columns: dict[str, tuple[object, tuple[int, ...], type]] = {}

    def column(
        self, name: str, fill: object, shape: tuple[int, ...] = (), dtype: type = np.float64
    ) -> None:
        self._columns[name] = (fill, shape, dtype)
        setattr(self, name, np.full((0, *shape), fill, dtype))

    @property
    def rows(self) -> int:
        first = next(iter(self._columns), None)
        return 0 if first is None else len(getattr(self, first))

    def take(self, index: np.ndarray) -> None:
        """Rebuild the rows: row ``i`` becomes old row ``index[i]``, or a new row where -1."""
        new = index < 0
        # one gather of every row, then the new rows filled: a close of a partition whose
        # series changed rebuilds every array of the bank, and a masked scatter into a full
        # array was twice the passes
        source = np.where(new, 0, index)
        for name, (fill, shape, dtype) in self._columns.items():
            old = getattr(self, name)
            if not len(old):
                setattr(self, name, np.full((len(index), *shape), fill, dtype))
                continue
            out = old.take(source, axis=0).astype(dtype, copy=False)
            out[new] = fill
            setattr(self, name, out)

    def state(self) -> State:
        out = {name: getattr(self, name) for name in self._columns}
        for name, (_, _, dtype) in self._columns.items():
            # a column replaced by a wider array would be narrowed by load(): a restart would
            # then differ from the uninterrupted run
            if out[name].dtype != dtype:
                raise TypeError(f"{name} is {out[name].dtype}, declared {np.dtype(dtype)}")
        return out

    def load(self, state: State) -> None:
        """Continue from ``state()``; a ValueError if an array's shape or kind of number
        differs (a snapshot of another layout: read as this one, its values would be wrong)."""
        for name, (_, shape, dtype) in self._columns.items():
            saved = np.asarray(state[name])
            if not np.can_cast(saved.dtype, dtype, casting="same_kind"):
                raise ValueError(f"{name}: {saved.dtype} where {np.dtype(dtype)} is expected")
            if saved.shape[1:] != shape:
                raise ValueError(f"{name}: shape {saved.shape[1:]} where {shape} is expected")
            setattr(self, name, saved.astype(dtype))  # a copy, never the state's own array


class Forecaster(Protocol):
    """A model over all series of a partition.

    ``forecast`` returns means ``[n, horizon]`` and a boolean ``[n]`` saying which rows are
    ready; rows not ready carry NaN. The bank gives these means quantiles from their errors
    (``models.quantiles.Bands``). A model with ``own_quantiles`` returns (mean, p10, p50, p90)
    ``[n, horizon, 4]`` instead (a global model trained for them, the moving average's
    sample) and keeps them: the bank then keeps no band of errors for it
    (``models.quantiles.Scored``). ``features`` is the
    bank's shared ``Recent`` window, as of the close (``learn`` sees it before the close's
    demand is added, ``forecast`` after).
    """

    name: str
    version: str
    own_quantiles: bool

    def take(self, index: np.ndarray) -> None:
        """Keep, reorder and add rows (see ``Columns.take``)."""

    def learn(self, close: Close, features: object) -> None:
        """Learn the bucket that just closed (nothing when ``close.open`` is False)."""

    def forecast(self, close: Close, features: object) -> tuple[np.ndarray, np.ndarray]:
        """Means ``[n, horizon]`` (or with quantiles ``[n, horizon, 4]``) and which rows are
        ready."""

    def state(self) -> State:
        """Everything learned so far, as arrays."""

    def load(self, state: State) -> None:
        """Continue from a ``state()`` of a model built with the same settings."""
