"""All models of all series of a partition, learned together once per closed bucket.

Like statsforecast's ``StatsForecast(models=..., fallback_model=...)``, the bank takes its
models as a list with unique names and names the fallback, here the reference every model
is scored against (``Settled.reference``). What a series publishes is the models' learned
combination (``models.combination``): their means and quantiles averaged with learned
weights. Row ``i`` of every model, band and feature array is series ``series[i]``; ``align``
makes the rows follow the partition's active series.

>>> from models.testing import close_of
>>> bank = Bank.default(horizon=3, season=7)
>>> bank.align(["a@UK", "b@UK"])
>>> for b in range(80):
...     c = close_of(b, [b % 7, 2.0], horizon=3)
...     _ = bank.learn(c)
...     fc = bank.forecast(c)
>>> bank.names
['seasonal_naive', 'moving_average', 'tsb', 'online_regression', 'lstm']
>>> fc.published[:, :, 0].round(1).tolist()  # the means: a weekly pattern, and a flat 2
[[3.0, 4.0, 5.0], [2.0, 2.0, 2.0]]
>>> fc.shares.round(2).tolist()[0]  # seasonal naive carries the combination
[0.98, 0.02, 0.0, 0.01, 0.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.util import hash_array

from models.base import SEASON, Close, Forecaster, State
from models.combination import POOLED, Combination, combine, own_quantiles
from models.forecasters.baselines import MovingAverage, SeasonalNaive
from models.forecasters.injected import Injected
from models.forecasters.intermittent import TSB
from models.forecasters.regression import OnlineRegression
from models.quantiles import (
    EXPONENT,
    MEAN,
    MOMENT_ALPHA,
    P10,
    Bands,
    Calibration,
    Moments,
    Points,
    Scored,
    widen_band,
)
from models.recent import DEFAULT_PEAK, DERIVED, Peak, Recent
from models.series import sku_of

__all__ = [
    "COMBINED",
    "LSTM",
    "PUBLISHED",
    "REMEMBERED",
    "SEASONAL_NAIVE",
    "Bank",
    "Forecasts",
    "Settled",
    "groups_of",
]

PUBLISHED = "published"
COMBINED = "combined"  # the model name of a published forecast
LSTM = "lstm"
SEASONAL_NAIVE = SeasonalNaive.name  # the reference every model is compared with
# the errors a series' smoothed moments remember: its evidence for its own weights
REMEMBERED = 2 / MOMENT_ALPHA - 1


@dataclass(frozen=True, slots=True)
class Settled:
    """What the close of ``bucket`` scored for the rows ``series``: each model's points (and
    ``published``'s), the truths, the series' MASE scales (NaN unknown) and the fallback's
    (seasonal naive's) absolute error at each ``k`` (the reference, NaN where it forecast
    nothing)."""

    bucket: int
    series: list[str]
    y: np.ndarray
    scale: np.ndarray
    points: dict[str, list[Points]]
    reference: dict[int, np.ndarray]


@dataclass(frozen=True, slots=True)
class Forecasts:
    """What one close forecast: ``steps[m]`` is model ``m``'s ``[n, horizon, 4]`` (NaN rows
    not ready), ``publishes`` the rows with a published forecast (some model is ready),
    ``published`` the combination's steps, ``shares [n, models]`` each model's weight in its
    mean (averaged over the horizon), and the combination's smoothed error moments ``[n,
    horizon]`` with where they are known, and each row's demand ``peak`` (``Recent``): what
    safety stock reads (the bank's own arrays: read them before the next ``learn``, as
    ``streamer.pipeline.close.decide`` does)."""

    steps: list[np.ndarray]
    publishes: np.ndarray
    published: np.ndarray
    shares: np.ndarray
    m2: np.ndarray
    m3: np.ndarray
    moments_known: np.ndarray
    peak: np.ndarray


def groups_of(series: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The distinct parts of ``series`` before ``@`` (their SKUs, as UTF-8 bytes), and each
    one's index: a bank keeps them between closes, so bytes (a quarter of numpy's str) and
    int32."""
    skus, index = np.unique([sku_of(name).encode() for name in series], return_inverse=True)
    return skus, index.astype(np.int32)


class Bank:
    """Each close, ``learn`` scores every forecast the closed bucket settles and updates the
    models; ``forecast`` then issues the next ``horizon`` buckets.

    >>> from models.testing import close_of
    >>> bank = Bank.default(horizon=2)
    >>> bank.align(["a@UK"])
    >>> for b in range(10):  # 5 units sold every day
    ...     c = close_of(b, [5.0], horizon=2)
    ...     settled = bank.learn(c)
    ...     fc = bank.forecast(c)
    >>> [(p.k, float(p.steps[0, 0])) for p in settled.points["seasonal_naive"]]  # issued k ago
    [(1, 5.0), (2, 5.0)]
    >>> fc.published[0].round(2).tolist()  # (mean, p10, p50, p90) for the next two days
    [[5.01, 3.55, 5.06, 6.51], [5.02, 3.6, 5.05, 6.42]]
    """

    def __init__(
        self,
        models: Sequence[Forecaster],
        fallback: str,
        horizon: int = 7,
        season: int = SEASON,
        peak: Peak = DEFAULT_PEAK,
    ) -> None:
        self.names = [m.name for m in models]
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"model names must be unique: {self.names}")
        if fallback not in self.names:
            raise ValueError(f"fallback {fallback!r} is not one of the models {self.names}")
        self.models = list(models)
        self.fallback = self.names.index(fallback)
        self.horizon = horizon
        self.recent = Recent(season, peak=peak)
        # a model with quantiles of its own needs only its errors' moments, not a band
        self.bands = [
            Scored(horizon) if getattr(m, "own_quantiles", False) else Bands(horizon)
            for m in models
        ]
        self.combination = Combination(len(models), horizon)
        # the combination's issued forecasts, and its errors' moments for safety stock
        self.published = Moments(horizon)
        self.calibration = Calibration()
        # the steps each issuing close expected closed, by slot: one flag for all rows
        self.closed_ahead = np.zeros((horizon, horizon), bool)
        self.series: list[str] = []
        self.through: int | None = None  # the last bucket learned
        self._groups: tuple[np.ndarray, np.ndarray] | None = None
        self._hashes: np.ndarray | None = None  # of the rows' names, kept as _groups is

    @classmethod
    def default(cls, horizon: int = 7, season: int = SEASON, peak: Peak = DEFAULT_PEAK) -> Bank:
        """Seasonal naive (the fallback), moving average, TSB, the partition's online
        regression and the global LSTM."""
        models: list[Forecaster] = [
            SeasonalNaive(season),
            MovingAverage(4 * season, 2 * season),
            TSB(),
            OnlineRegression(season),
            Injected(LSTM),
        ]
        return cls(models, SEASONAL_NAIVE, horizon, season, peak)

    def _parts(self) -> list[Forecaster | Recent | Moments | Combination]:
        return [
            self.recent, *self.models, *self.bands, self.combination, self.published,
            self.calibration,
        ]  # fmt: skip

    def align(self, series: Sequence[str]) -> None:
        """Make the rows ``series``, in that order: known series keep their state, new ones
        start fresh, the others leave."""
        if list(series) == self.series:
            return
        if self.series:
            index = pd.Index(self.series).get_indexer(pd.Index(series))
        else:
            index = np.full(len(series), -1)
        for part in self._parts():
            part.take(index)
        self.series = list(series)
        self._groups = self._hashes = None

    def groups(self) -> tuple[np.ndarray, np.ndarray]:
        """The distinct parts of the rows' names before ``@`` (their SKUs) and each row's
        index into them, kept until the rows change: rollups need them at every close."""
        if self._groups is None:
            self._groups = groups_of(self.series)
        return self._groups

    def draws(self, bucket: int) -> np.ndarray:
        """Each row's uniform draw in [0, 1) at the close of ``bucket``, from its name and the
        bucket alone: a restart, or the series in another row or partition, draws the same.

        >>> bank = Bank.default()
        >>> bank.align(["a@UK", "b@UK"])
        >>> bank.draws(3).round(3).tolist(), bank.draws(4).round(3).tolist()
        ([0.328, 0.619], [0.302, 0.182])
        """
        if self._hashes is None:  # SipHash under pandas' fixed key: the same in every process
            self._hashes = hash_array(np.asarray(self.series, dtype=object))
        x = self._hashes ^ np.uint64(bucket * 0x9E3779B97F4A7C15 % 2**64)
        # splitmix64's finaliser: neighbouring buckets draw unrelated numbers
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
        return (x >> np.uint64(11)).astype(np.float64) * 2.0**-53

    def offer(self, name: str, version: str, forecasts: np.ndarray) -> None:
        """Hand the externally trained model ``name`` its forecasts for the next close: (mean,
        p10, p50, p90) ``[n, horizon, 4]``."""
        model = self.models[self.names.index(name)]
        if not isinstance(model, Injected):
            raise TypeError(f"{name} learns in the bank; only injected models take offers")
        model.offer(version, forecasts)

    def learn(self, close: Close) -> Settled:
        """Learn the closed bucket; return every forecast it settles."""
        points = {}
        for name, bands in zip(self.names, self.bands, strict=True):
            points[name] = bands.settle(close.bucket, close.open, self.closed_ahead)
            bands.learn(points[name], close.y)
        issued = self.published.settle(close.bucket, close.open, self.closed_ahead)
        self.published.learn(issued, close.y)
        self.calibration.learn(issued, close.y)
        for model in self.models:
            model.learn(close, self.recent)
        self.recent.update(close.bucket, close.open, close.y, close.price)
        scale = self.recent.scale()  # known when the points are scored, this bucket included
        if close.open:
            issued_for = self._issued(points, close.n)
            closed = self._closed_for(close.bucket)
            self.combination.learn(issued_for, close.y, scale, closed, self.draws(close.bucket))
        points[PUBLISHED] = issued
        self.through = close.bucket
        reference = {
            p.k: np.where(p.valid, np.abs(close.y - p.steps[:, MEAN]), np.nan)
            for p in points[self.names[self.fallback]]
        }
        return Settled(close.bucket, self.series, close.y, scale, points, reference)

    def _issued(self, points: dict[str, list[Points]], n: int) -> np.ndarray:
        """Each model's steps issued for the closing bucket ``[models, horizon, n, 4]`` (NaN
        where it issued none), from what its bands settled."""
        out = np.full((len(self.models), self.horizon, n, 4), np.nan)
        for m, name in enumerate(self.names):
            for p in points[name]:
                out[m, p.k - 1] = p.steps
        return out

    def _closed_for(self, bucket: int) -> np.ndarray:
        """Which of the forecasts for ``bucket`` (issued 1 .. horizon buckets before it)
        expected it closed."""
        k = np.arange(1, self.horizon + 1)
        return self.closed_ahead[(bucket - k) % self.horizon, k - 1]

    def forecast(self, close: Close) -> Forecasts:
        """Every ready model's forecast for the buckets after ``close``, and their
        combination."""
        steps = []
        ready = np.zeros((len(self.models), close.n), bool)
        for i, (model, bands) in enumerate(zip(self.models, self.bands, strict=True)):
            means, ready[i] = model.forecast(close, self.recent)
            steps.append(bands.steps(means, ready[i], close.ahead_closed))
            bands.issue(close.bucket, steps[i])
        own_mse = np.stack([np.where(b.known(), b.mean_square(), np.nan) for b in self.bands])
        evidence = np.minimum(self.recent.count, REMEMBERED).astype(np.float64)
        stacked = np.stack(steps)
        weights = self.combination.weigh(stacked[..., MEAN], own_mse, evidence)
        publishes = ready.any(axis=0)
        c = self.combination
        group = c.groups()
        own = own_quantiles(stacked, c.choice()[group])
        combined = combine(stacked, weights, c.quantile_weights, group, own)
        # a model's own quantile, picked for its pooled pinball loss as issued, is published
        # as issued: widened, it lost to the model alone (docs/accuracy.md). Compared by
        # value, since putting the quantiles in order may have moved it to another level.
        published = widen_band(combined, self.calibration.widen, combined[..., P10:] == own)
        published[~publishes] = np.nan
        self.published.issue(close.bucket, published)
        self.closed_ahead[close.bucket % self.horizon] = close.ahead_closed
        m2, m3, known = self.published.moments()
        shares = weights.mean(axis=1)
        self.recent.release()
        return Forecasts(steps, publishes, published, shares, m2, m3, known, self.recent.peak)

    def version(self, index: int) -> str:
        return self.models[index].version

    def published_version(self) -> str:
        """The combination's lineage: every model's version, in the bank's order, joined by
        ``+`` (``3+4+2+river-lr-global-1+v2``): a new LSTM makes new forecast ids."""
        return "+".join(m.version for m in self.models)

    def _shared(self) -> list[tuple[str, Recent | Combination | Moments | Calibration]]:
        """The parts every model shares, by their prefix in ``state()``."""
        return [
            ("recent", self.recent), ("combination", self.combination),
            ("published", self.published), ("calibration", self.calibration),
        ]  # fmt: skip

    def state(self) -> State:
        """Every array of the bank, by a dotted name (models.snapshot writes them)."""
        out: State = {
            "through": np.array(-1 if self.through is None else self.through),
            "closed_ahead": self.closed_ahead,
        }
        for prefix, part in self._shared():
            out.update({f"{prefix}.{k}": v for k, v in part.state().items()})
        for name, model, bands in zip(self.names, self.models, self.bands, strict=True):
            out.update({f"model.{name}.{k}": v for k, v in model.state().items()})
            out.update({f"bands.{name}.{k}": v for k, v in bands.state().items()})
        return out

    def load(self, state: State, series: Sequence[str]) -> None:
        """Continue from ``state()`` of a bank with the same models, whose rows were
        ``series``. A model or shared part the state lacks (added since) starts fresh."""
        through = int(state["through"])
        self.through = None if through < 0 else through
        self.closed_ahead = np.asarray(state["closed_ahead"], bool).copy()
        self.series = list(series)
        self._groups = self._hashes = None
        fresh = np.full(len(series), -1)

        def sub(prefix: str) -> State:
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

        for prefix, part in self._shared():
            saved = sub(f"{prefix}.")
            # a packed column's exponents come from its floats in a snapshot from before
            packed = {k for k in part.state() if k.endswith(EXPONENT)}
            if saved.keys() >= part.state().keys() - set(POOLED) - DERIVED - packed:
                part.load(saved)
            else:
                part.take(fresh)
        for name, model, bands in zip(self.names, self.models, self.bands, strict=True):
            saved = sub(f"bands.{name}.")
            if saved:
                model.load(sub(f"model.{name}."))
                bands.load(saved)
            else:
                model.take(fresh)
                bands.take(fresh)
