"""Quantiles for any point forecaster, from its own recent errors (split conformal).

Every forecast a wrapped model issues is remembered; when the truth for a bucket arrives, the
error at each horizon goes into a bounded window per horizon. p10/p50/p90 are the mean plus
the empirical quantiles of those errors. Until a horizon has enough errors, the pooled errors of
all horizons are used, and before that a Poisson-like spread (demand is a count).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from models.base import Forecaster

LEVELS = (0.1, 0.5, 0.9)
MIN_ERRORS = 5


@dataclass(frozen=True, slots=True)
class Step:
    mean: float
    p10: float
    p50: float
    p90: float


def quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated quantile of an already sorted, non-empty list."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


class Conformal:
    """Wraps a ``Forecaster``: same learning, forecasts with p10/p50/p90."""

    def __init__(self, model: Forecaster, horizon: int = 7, window: int = 28) -> None:
        self.model = model
        self.horizon = horizon
        self._errors = [deque[float](maxlen=window) for _ in range(horizon)]
        self._t = 0  # index of the next observation
        self._pending: dict[int, list[float]] = {}  # issued at t -> means for t..t+h-1

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def version(self) -> str:
        return self.model.version

    def learn_one(self, y: float) -> None:
        for issued_at, means in list(self._pending.items()):
            k = self._t - issued_at
            if k < len(means):
                self._errors[k].append(y - means[k])
            if k >= len(means) - 1:
                del self._pending[issued_at]
        self.model.learn_one(y)
        self._t += 1

    def forecast(self) -> list[Step] | None:
        means = self.model.forecast(self.horizon)
        if means is None:
            return None
        self._pending[self._t] = means
        pooled: list[float] | None = None  # only while a horizon has too few errors
        steps = []
        for k, mean in enumerate(means):
            if len(self._errors[k]) >= MIN_ERRORS:
                errs = sorted(self._errors[k])
            else:
                if pooled is None:
                    pooled = sorted(e for errs in self._errors for e in errs)
                errs = pooled
            if len(errs) >= MIN_ERRORS:
                p10, p50, p90 = (mean + quantile(errs, q) for q in LEVELS)
            else:
                spread = 1.2816 * math.sqrt(max(mean, 1.0))
                p10, p50, p90 = mean - spread, mean, mean + spread
            p10, p50, p90 = sorted(max(v, 0.0) for v in (p10, p50, p90))
            steps.append(Step(mean, p10, p50, p90))
        return steps

    def recent_mae(self) -> float | None:
        """Mean absolute error over the window, all horizons; None before MIN_ERRORS."""
        errs = [abs(e) for errs in self._errors for e in errs]
        return sum(errs) / len(errs) if len(errs) >= MIN_ERRORS else None

    def last_error(self) -> float | None:
        """The one-step-ahead error of the latest observation, for live error metrics."""
        one_step = self._errors[0]
        return one_step[-1] if one_step else None
