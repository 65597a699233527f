"""The state columns a bucket close reads of a partition's series, kept between closes.

A close reads each active series' state hash (first bucket, lead time, stock, alert): one
``HMGET`` a series inside read_close.lua at every close, though most series' states do not
change from one close to the next. In the close benchmark (50,000 series, docs/benchmark.md)
that was about 5 us a series of Redis's time, and the close's read took 18.3 us a series
(7.6 once kept). So every write to a state hash also
lists the series in the partition's ``touched`` set (apply.lua for each event it applies
and each pending stock change it lets take effect; ``begin_close`` for the series whose
alert a close changes), a close's read takes that set and empties it in the same script, and
the worker keeps the columns it read: the next close reads only the series touched since, and
those it has not kept.

A partition's kept columns are forgotten when the worker loses or regains the partition
(another worker may have emptied the set meanwhile; the read is fenced, so a worker paused
past its session cannot), when a read fails after emptying it, and every
``WHOLE_READ_SECONDS``: a series key that expires (``SHELFCAST_SERIES_TTL_SECONDS`` of wall
time without an event) changes its state with no script to list it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["WHOLE_READ_SECONDS", "KeptStates", "StateColumns"]

# how often a partition's states are read whole, whatever the cache holds
WHOLE_READ_SECONDS = 3_600.0


@dataclass(frozen=True, slots=True)
class StateColumns:
    """The state of ``names``, a row each: first bucket and lead time (NaN: none), stock on
    hand, whether it is known, whether an alert is raised, the alert's sequence number, stock
    on order and pack size (0: none)."""

    names: pd.Index
    first: np.ndarray
    lead: np.ndarray
    on_hand: np.ndarray
    known: np.ndarray
    raised: np.ndarray
    seq: np.ndarray
    on_order: np.ndarray
    pack: np.ndarray

    @classmethod
    def parse(cls, names: Sequence[str], cols: Mapping[str, list]) -> StateColumns:
        """From read_close.lua's columns (a value per series, False where it has none).

        >>> s = StateColumns.parse(["a"], {"first": ["15000"], "lead": [False],
        ...     "on_hand": ["-3"], "known": ["1"], "alert": ["raised"], "seq": ["2"],
        ...     "on_order": [False], "pack": ["6"]})
        >>> s.first.tolist(), s.on_hand.tolist(), bool(s.raised[0]), s.pack.tolist()
        ([15000.0], [-3], True, [6])
        """

        def column(name: str, missing: float) -> np.ndarray:
            return np.array([missing if v is False else float(v) for v in cols[name]], np.float64)

        def count(name: str) -> np.ndarray:
            return column(name, 0.0).astype(np.int64)

        return cls(
            pd.Index(names, dtype=object),
            column("first", np.nan),
            column("lead", np.nan),
            count("on_hand"),
            np.array([v == "1" for v in cols["known"]], bool),
            np.array([v == "raised" for v in cols["alert"]], bool),
            count("seq"),
            count("on_order"),
            count("pack"),
        )

    def nbytes(self) -> int:
        """The columns and the names' pointers (the names themselves are the bank's)."""
        return 8 * len(self.names) + sum(getattr(self, f).nbytes for f in _FIELDS)

    def over(self, kept: StateColumns | None, names: Sequence[str]) -> StateColumns:
        """The state of ``names``: these rows where they have them, else ``kept``'s."""
        index = pd.Index(names, dtype=object)
        mine = self.names.get_indexer(index)
        theirs = np.full(len(index), -1) if kept is None else kept.names.get_indexer(index)
        if ((mine < 0) & (theirs < 0)).any():
            raise KeyError("a series has neither a fresh nor a kept state")
        fresh = mine >= 0

        def merged(field: str) -> np.ndarray:
            ours = getattr(self, field)
            if kept is None:
                return ours[mine]
            out = getattr(kept, field)[theirs]  # a row of -1 is overwritten just below
            out[fresh] = ours[mine[fresh]]
            return out

        return StateColumns(index, *(merged(f) for f in _FIELDS))


_FIELDS = ("first", "lead", "on_hand", "known", "raised", "seq", "on_order", "pack")


class KeptStates:
    """Each partition's state columns as its last close read them."""

    def __init__(
        self, whole_every: float = WHOLE_READ_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._kept: dict[int, tuple[StateColumns, float]] = {}
        self._whole_every, self._clock = whole_every, clock

    def forget(self, partition: int) -> None:
        self._kept.pop(partition, None)

    def take(self, partition: int) -> tuple[StateColumns | None, float]:
        """The partition's kept columns (None: read them whole) and when they were last read
        whole; they are forgotten until ``keep`` puts the next ones back, so that a read that
        fails half way leaves none."""
        kept, whole_at = self._kept.pop(partition, (None, -np.inf))
        if self._clock() - whole_at >= self._whole_every:
            return None, self._clock()
        return kept, whole_at

    def keep(self, partition: int, states: StateColumns, whole_at: float) -> None:
        self._kept[partition] = (states, whole_at)

    def nbytes(self) -> int:
        """What every partition's kept columns hold (``StateColumns.nbytes``)."""
        return sum(states.nbytes() for states, _ in self._kept.values())
