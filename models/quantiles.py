"""Quantiles for any point forecaster, from its own recent errors (split conformal).

Every forecast a wrapped model issues is remembered; when the truth for a bucket arrives, the
error at each horizon goes into a bounded window per horizon. p10/p50/p90 are the mean plus
the empirical quantiles of those errors. Until a horizon has enough errors, the pooled errors of
all horizons are used, and before that a Poisson-like spread (demand is a count).

The interval levels adapt to the coverage actually reached (adaptive conformal inference,
Gibbs and Candes 2021): each p10 or p90 that misses its truth moves that side's level outwards,
each hit moves it back a little, so over time 10% of the truths fall below p10 and 10% above
p90 on every series, even when its errors drift.

Buckets expected to be closed get a forecast of zero with no spread. When the truth arrives
for them it is scored like any other point but never enters the error windows: a surprise
opening says nothing about the model's everyday errors.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from models.base import Context, Forecaster, State

LEVELS = (0.1, 0.5, 0.9)
MIN_ERRORS = 5
ADAPT_RATE = 0.005  # level change per scored point
SELECTION_ALPHA = 0.005  # weight of each scored point in the recent p50 error


@dataclass(frozen=True, slots=True)
class Step:
    mean: float
    p10: float
    p50: float
    p90: float

    def as_list(self) -> list[float]:
        return [self.mean, self.p10, self.p50, self.p90]


CLOSED = Step(0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class Scored:
    """A forecast step meeting its truth: ``k`` buckets ahead (1-based), ``closed`` if the
    step was forecast as a closed bucket."""

    k: int
    y: float
    step: Step
    closed: bool


def _moments(values: Iterable[float]) -> tuple[float, float]:
    values = list(values)
    return sum(v * v for v in values) / len(values), sum(v**3 for v in values) / len(values)


def quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated quantile of an already sorted, non-empty list."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


class Issued:
    """Forecasts issued and waiting for their truth, scored as the buckets close."""

    def __init__(self) -> None:
        self.t = 0  # index of the next bucket
        self._pending: dict[int, tuple[list[Step], list[bool]]] = {}

    def issue(self, steps: list[Step], closed: list[bool]) -> None:
        self._pending[self.t] = (steps, closed)

    def advance(self, y: float | None) -> list[Scored]:
        """Close the next bucket: score what was forecast for it (nothing if it was closed)."""
        scored = []
        for issued_at, (steps, closed) in list(self._pending.items()):
            k = self.t - issued_at
            if y is not None and k < len(steps):
                scored.append(Scored(k + 1, y, steps[k], closed[k]))
            if k >= len(steps) - 1:
                del self._pending[issued_at]
        self.t += 1
        return scored

    def state(self) -> State:
        return {
            "t": self.t,
            "pending": [
                [at, [s.as_list() for s in st], cl] for at, (st, cl) in self._pending.items()
            ],
        }

    def load(self, state: State) -> None:
        self.t = state["t"]
        self._pending = {at: ([Step(*s) for s in st], cl) for at, st, cl in state["pending"]}


class Conformal:
    """Wraps a ``Forecaster``: same learning, forecasts with p10/p50/p90."""

    def __init__(self, model: Forecaster, horizon: int = 7, window: int = 56) -> None:
        self.model = model
        self.horizon = horizon
        self._errors = [deque[float](maxlen=window) for _ in range(horizon)]
        self._p50_abs: float | None = None  # smoothed absolute error of the p50s
        self._scored = 0
        self.issued = Issued()
        self._levels = [LEVELS[0], LEVELS[2]]

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def version(self) -> str:
        return self.model.version

    def learn_one(self, y: float | None, x: Context) -> list[Scored]:
        """Learn the bucket that closed; return this model's forecasts scored against it."""
        scored = self.issued.advance(y)
        lo, hi = self._levels
        for s in scored:
            if not s.closed:
                self._errors[s.k - 1].append(s.y - s.step.mean)
                err = abs(s.y - s.step.p50)
                ewma = self._p50_abs
                self._p50_abs = err if ewma is None else ewma + SELECTION_ALPHA * (err - ewma)
                self._scored += 1
                lo += ADAPT_RATE * (LEVELS[0] - (s.y < s.step.p10))
                hi += ADAPT_RATE * ((s.y > s.step.p90) - LEVELS[0])
        self._levels = [min(max(lo, 0.0), LEVELS[1]), min(max(hi, LEVELS[1]), 1.0)]
        self.model.learn_one(y, x)
        return scored

    def forecast(self, xs: list[Context]) -> list[Step] | None:
        means = self.model.forecast(self.horizon, xs)
        if means is None:
            return None
        pooled: list[float] | None = None  # only while a horizon has too few errors
        steps = []
        for k, (mean, x) in enumerate(zip(means, xs, strict=True)):
            if x.closed:
                steps.append(CLOSED)
                continue
            if len(self._errors[k]) >= MIN_ERRORS:
                errs = sorted(self._errors[k])
            else:
                if pooled is None:
                    pooled = sorted(e for errs in self._errors for e in errs)
                errs = pooled
            if len(errs) >= MIN_ERRORS:
                p10, p50, p90 = (
                    mean + quantile(errs, q) for q in (self._levels[0], LEVELS[1], self._levels[1])
                )
            else:
                spread = 1.2816 * math.sqrt(max(mean, 1.0))
                p10, p50, p90 = mean - spread, mean, mean + spread
            p10, p50, p90 = sorted(max(v, 0.0) for v in (p10, p50, p90))
            steps.append(Step(mean, p10, p50, p90))
        self.issued.issue(steps, [x.closed for x in xs])
        return steps

    def error_moments(self) -> list[tuple[float, float]] | None:
        """Mean square and mean cube of the recent errors of the mean, per horizon (pooled
        while a horizon has too few), or None before any are known. Unlike the p10-p90 band
        they see the rare large orders of lumpy demand, which safety stock must cover."""
        pooled = [e for errs in self._errors for e in errs]
        if len(pooled) < MIN_ERRORS:
            return None
        return [_moments(errs if len(errs) >= MIN_ERRORS else pooled) for errs in self._errors]

    def recent_mae(self) -> float | None:
        """Smoothed absolute error of the recent p50s, all horizons; None before MIN_ERRORS."""
        return self._p50_abs if self._scored >= MIN_ERRORS else None

    def state(self) -> State:
        return {
            "model": self.model.state(),
            "errors": [list(e) for e in self._errors],
            "p50_abs": [self._p50_abs, self._scored],
            "issued": self.issued.state(),
            "levels": self._levels,
        }

    def load(self, state: State) -> None:
        self.model.load(state["model"])
        for errs, saved in zip(self._errors, state["errors"], strict=True):
            errs.extend(saved)
        self._p50_abs, self._scored = state["p50_abs"]
        self.issued.load(state["issued"])
        self._levels = list(state["levels"])
