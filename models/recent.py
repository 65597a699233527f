"""What every model of a series reads about its recent demand, kept once per row.

Seasonal naive, the moving average, the regression's features, Holt-Winters' seeding, the
MASE scale and the rolling features stored in Redis all look at the same few numbers: the
last open values of each slot of the season, the last ``window`` open values, the price and
its average. The bank keeps them here, once per series, instead of once per model.

Slots are indexed by ``bucket % season``: a closed bucket writes nothing, so its slot keeps
the value it had a season earlier (before a full season, 0).

It also keeps each series' demand ``peak`` (``Peak``): the largest sum of ``span`` open values
it has had, fading by half every ``half_life`` buckets. The reorder point never falls below
it (streamer/alerts/reorder.py): errors that have not seen a wholesale order yet give no
safety stock against the next one.

>>> r = Recent(season=3, window=4)
>>> r.take(np.array([-1]))
>>> for b, y in enumerate([1.0, 2.0, 3.0, 4.0]):
...     r.update(b, True, np.array([y]), np.array([np.nan]))
>>> r.slots.tolist(), r.mean(2).tolist(), r.mean(4).tolist()
([[4.0, 2.0, 3.0]], [3.5], [2.5])
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from models.base import SEASON, Columns

__all__ = ["DEFAULT_PEAK", "DERIVED", "EWMA_ALPHA", "PRICE_ALPHA", "Peak", "Recent"]

EWMA_ALPHA = 0.1
PRICE_ALPHA = 0.05
# columns a snapshot from before them may lack: ``load`` rebuilds them from the others
DERIVED = frozenset({"peak"})


@dataclass(frozen=True, slots=True)
class Peak:
    """The demand peak a series keeps: the largest sum of ``span`` buckets' demand, fading by
    half every ``half_life`` buckets (``half_life`` 0: none kept, the peak is 0).

    >>> p = Peak(span=2, half_life=1.0)
    >>> p.fade(np.array([8.0])).tolist(), p.update(np.array([8.0]), np.array([3.0])).tolist()
    ([4.0], [4.0])
    """

    span: int = 10
    half_life: float = 365.0

    def fade(self, peak: np.ndarray) -> np.ndarray:
        """``peak`` one bucket later."""
        return peak * (0.5 ** (1 / self.half_life) if self.half_life > 0 else 0.0)

    def update(self, peak: np.ndarray, span_sum: np.ndarray) -> np.ndarray:
        """``peak`` one bucket later, with ``span_sum`` the demand of the span ending there."""
        return np.maximum(self.fade(peak), span_sum if self.half_life > 0 else 0.0)


# over lead time + review period at their defaults (3 + 7 days), fading by half over a year
DEFAULT_PEAK = Peak()


class Recent(Columns):
    def __init__(self, season: int = SEASON, window: int = 28, peak: Peak = DEFAULT_PEAK) -> None:
        super().__init__()
        self.season = season
        self.window = window
        self.peak_rule = replace(peak, span=min(max(peak.span, 1), window))
        self._memo: dict[int, np.ndarray] = {}
        self._window: np.ndarray | None = None  # last(window) during a close
        # demand is a count: float32 holds it exactly up to 16 million a bucket (and the
        # running sums below to within 2**-24 of themselves)
        self.column("slots", 0.0, (season,), np.float32)
        self.column("ring", 0.0, (window,), np.float32)
        self.column("count", 0, (), np.int32)  # open buckets learned
        self.column("age", 0, (), np.int32)  # buckets learned, closed ones included
        # float32 like the rest: float64 was an eighth of a series' 2 KB for no score
        self.column("ewma", np.nan, (), np.float32)
        self.column("price", np.nan, (), np.float32)
        self.column("price_avg", np.nan, (), np.float32)
        # in-sample seasonal naive absolute errors: the MASE scale
        self.column("scale_sum", 0.0, (), np.float32)
        self.column("scale_n", 0, (), np.int32)
        self.column("peak", 0.0, (), np.float32)

    def take(self, index: np.ndarray) -> None:
        super().take(index)
        self.release()

    def load(self, state: dict[str, np.ndarray]) -> None:
        """Continue from ``state()``; a state from before the peak starts it from the largest
        span of the values it keeps."""
        if "peak" not in state:
            state = {**state, "peak": self._peak_of(np.asarray(state["ring"]), state["count"])}
        super().load(state)
        self.release()

    def _peak_of(self, ring: np.ndarray, count: np.ndarray) -> np.ndarray:
        """The peak of a state from before it: the largest span of the values its ring keeps."""
        latest = np.nan_to_num(_latest(ring, np.asarray(count), self.window))
        spans = sliding_window_view(latest, self.peak_rule.span, axis=1).sum(axis=2)
        start = np.zeros(len(ring))
        return self.peak_rule.update(start, spans.max(axis=1, initial=0.0)).astype(np.float32)

    def full_season(self) -> np.ndarray:
        """Rows whose every slot has been through a bucket (seasonal naive's condition)."""
        return (self.age >= self.season) & (self.count >= self.season)

    def release(self) -> None:
        """Drop what a close cached (the latest window, the means): 120 bytes a series
        between closes."""
        self._memo = {}
        self._window = None

    def last(self, k: int) -> np.ndarray:
        """The ``k`` latest open values ``[n, k]``, newest first, NaN where fewer."""
        if k > self.window:
            return _latest(self.ring, self.count, k)
        if self._window is None:  # a close's learn and forecast read the last 10 and 28
            self._window = _latest(self.ring, self.count, self.window)
        return self._window[:, :k]

    def mean(self, k: int) -> np.ndarray:
        """Mean of the ``k`` latest open values; NaN for a row with none."""
        if k in self._memo:  # every model reads the same few means at a close
            return self._memo[k]
        values = self.last(k)
        n = np.sum(~np.isnan(values), axis=1)
        with np.errstate(invalid="ignore"):
            mean = np.where(n > 0, np.nansum(values, axis=1) / np.maximum(n, 1), np.nan)
        self._memo[k] = mean
        return mean

    def update(self, bucket: int, is_open: bool, y: np.ndarray, price: np.ndarray) -> None:
        """Add a closed bucket (its demand only when the shop traded)."""
        self.release()
        known = self.full_season()
        self.age += 1
        if not is_open:
            self.peak = self.peak_rule.fade(self.peak).astype(np.float32)
            return
        slot = bucket % self.season
        one_ago = self.slots[:, slot]
        self.scale_sum += np.where(known, np.abs(y - one_ago), 0.0)
        self.scale_n += known
        self.slots[:, slot] = y
        self.ring[np.arange(len(y)), self.count % self.window] = y
        self.count += 1
        span_sum = np.nansum(self.last(self.peak_rule.span), axis=1)
        self.peak = self.peak_rule.update(self.peak, span_sum).astype(np.float32)
        self.ewma[:] = np.where(
            np.isnan(self.ewma), y, EWMA_ALPHA * y + (1 - EWMA_ALPHA) * self.ewma
        )
        sold = ~np.isnan(price)
        self.price[:] = np.where(sold, price, self.price)
        first = np.isnan(self.price_avg)
        self.price_avg[:] = np.where(
            sold,
            np.where(first, price, self.price_avg + PRICE_ALPHA * (price - self.price_avg)),
            self.price_avg,
        )

    def scale(self) -> np.ndarray:
        """The MASE scale: in-sample seasonal naive MAE, NaN before it is known."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.scale_n > 0, self.scale_sum / np.maximum(self.scale_n, 1), np.nan)

    def rolling(self) -> dict[str, np.ndarray]:
        """The rolling features stored in Redis per series."""
        window = _latest(self.ring, self.count, self.window)  # read after the close's caches go
        return {
            "demand_sum_7": np.nansum(window[:, :7], axis=1),
            "demand_sum_28": np.nansum(window, axis=1),
            # float64 first: rounded as float32, the number orjson writes has 15 digits
            "demand_ewma": np.round(np.nan_to_num(self.ewma).astype(np.float64), 6),
        }


def _latest(ring: np.ndarray, count: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` latest values ``[n, k]`` of rings ``[n, window]`` that took ``count`` values
    each, newest first, NaN where fewer."""
    j = np.arange(k)
    window = ring.shape[1]
    out = np.take_along_axis(ring, (count[:, None] - 1 - j) % window, axis=1)
    return np.where(j < np.minimum(count, window)[:, None], out, np.nan)
