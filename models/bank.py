"""All models of one series, learned together once per closed bucket."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from models.baselines import MovingAverage, SeasonalNaive
from models.online import HoltWinters
from models.quantiles import Conformal, Step
from models.selection import select

EWMA_ALPHA = 0.1


@dataclass(frozen=True, slots=True)
class SeriesForecast:
    model: str
    version: str
    steps: list[Step]


class ModelBank:
    """Seasonal naive, moving average and river Holt-Winters for one series.

    ``learned_through`` is the last bucket learned: the caller guards against learning a
    bucket twice with it (and with the marker stored in Redis).
    """

    def __init__(self, horizon: int = 7, season: int = 7) -> None:
        self.models: dict[str, Conformal] = {
            m.name: Conformal(m, horizon)
            for m in (SeasonalNaive(season), MovingAverage(4 * season), HoltWinters(season))
        }
        self.learned_through: int | None = None
        self._recent: deque[float] = deque(maxlen=28)
        self._ewma: float | None = None

    def learn(self, bucket: int, y: float) -> None:
        for model in self.models.values():
            model.learn_one(y)
        self._recent.append(y)
        self._ewma = y if self._ewma is None else EWMA_ALPHA * y + (1 - EWMA_ALPHA) * self._ewma
        self.learned_through = bucket

    def rolling_features(self) -> dict[str, float]:
        """Rolling demand features of the latest closed buckets, for the feature store."""
        recent = list(self._recent)
        return {
            "demand_sum_7": sum(recent[-7:]),
            "demand_sum_28": sum(recent),
            "demand_ewma": round(self._ewma or 0.0, 6),
        }

    def forecast(self) -> tuple[list[SeriesForecast], str | None]:
        """Every ready model's forecast, and the name of the one selected to publish."""
        steps = {name: s for name, m in self.models.items() if (s := m.forecast()) is not None}
        chosen = select(self.models, steps)
        out = [SeriesForecast(name, self.models[name].version, s) for name, s in steps.items()]
        return out, chosen
