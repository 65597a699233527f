"""All models of one series, learned together once per closed bucket."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from models.base import Context, State
from models.baselines import MovingAverage, SeasonalNaive
from models.injected import Injected
from models.intermittent import TSB
from models.online import HoltWinters
from models.quantiles import Conformal, Issued, Scored, Step
from models.regression import OnlineRegression
from models.selection import select

EWMA_ALPHA = 0.1
PUBLISHED = "published"
LSTM = "lstm"
SEASONAL_NAIVE = "seasonal_naive"  # the reference every model is compared with


@dataclass(frozen=True, slots=True)
class SeriesForecast:
    model: str
    version: str
    steps: list[Step]
    # mean square and cube of the model's recent errors per horizon, for safety stock
    error_moments: list[tuple[float, float]] | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """One forecast point scored when its bucket closed: by ``model`` (or ``published``),
    with the series' seasonal-naive scale and the classic seasonal naive's absolute error at
    the same point, when known."""

    model: str
    scored: Scored
    scale: float | None
    reference_abs: float | None


class ModelBank:
    """Seasonal naive, moving average, TSB, river Holt-Winters, a river online regression and
    the global LSTM (forecasts offered from outside) for one series, each with conformal
    quantiles.

    ``learned_through`` is the last bucket learned: the caller guards against learning a
    bucket twice with it (and with the marker stored in Redis).
    """

    def __init__(self, horizon: int = 7, season: int = 7) -> None:
        self.horizon = horizon
        self.season = season
        self.models: dict[str, Conformal] = {
            m.name: Conformal(m, horizon)
            for m in (
                SeasonalNaive(season),
                MovingAverage(4 * season),
                TSB(),
                HoltWinters(season),
                OnlineRegression(season),
                Injected(LSTM),
            )
        }
        self.published = Issued()
        self.chosen: str | None = None
        self.learned_through: int | None = None
        self._recent: deque[float] = deque(maxlen=28)  # open buckets only
        self._ewma: float | None = None
        # in-sample seasonal naive errors, the MASE scale
        self._scale_sum = 0.0
        self._scale_n = 0

    def learn(self, bucket: int, y: float | None, x: Context) -> list[Outcome]:
        """Learn the closed ``bucket`` (``y`` None: the shop was closed) and return every
        forecast it settles, the published one included."""
        snaive = self.models[SEASONAL_NAIVE].model
        assert isinstance(snaive, SeasonalNaive)
        one_ago = snaive.forecast(self.season, [])
        if y is not None and one_ago is not None:
            self._scale_sum += abs(y - one_ago[0])
            self._scale_n += 1
        scored = {name: m.learn_one(y, x) for name, m in self.models.items()}
        scored[PUBLISHED] = self.published.advance(y)
        if y is not None:
            self._recent.append(y)
            ewma = self._ewma
            self._ewma = y if ewma is None else EWMA_ALPHA * y + (1 - EWMA_ALPHA) * ewma
        self.learned_through = bucket
        scale = self._scale_sum / self._scale_n if self._scale_n else None
        reference = {s.k: abs(s.y - s.step.mean) for s in scored[SEASONAL_NAIVE]}
        return [
            Outcome(name, s, scale, reference.get(s.k))
            for name, points in scored.items()
            for s in points
        ]

    def rolling_features(self) -> dict[str, float]:
        """Rolling demand features of the latest open buckets, for the feature store."""
        recent = list(self._recent)
        return {
            "demand_sum_7": sum(recent[-7:]),
            "demand_sum_28": sum(recent),
            "demand_ewma": round(self._ewma or 0.0, 6),
        }

    def offer(self, name: str, version: str, means: list[float]) -> None:
        """Hand the externally trained model ``name`` its forecast for the next ``forecast``."""
        model = self.models[name].model
        assert isinstance(model, Injected)
        model.offer(version, means)

    def forecast(self, xs: list[Context]) -> tuple[list[SeriesForecast], str | None]:
        """Every ready model's forecast for the buckets ``xs`` describe, and the name of the
        one selected to publish."""
        steps = {name: s for name, m in self.models.items() if (s := m.forecast(xs)) is not None}
        chosen = select(self.models, steps)
        self.chosen = chosen
        if chosen is not None:
            self.published.issue(steps[chosen], [x.closed for x in xs])
        out = [
            SeriesForecast(name, m.version, steps[name], m.error_moments())
            for name, m in self.models.items()
            if name in steps
        ]
        return out, chosen

    def state(self) -> State:
        return {
            "models": {name: m.state() for name, m in self.models.items()},
            "published": self.published.state(),
            "chosen": self.chosen,
            "learned_through": self.learned_through,
            "recent": list(self._recent),
            "ewma": self._ewma,
            "scale": [self._scale_sum, self._scale_n],
        }

    @classmethod
    def from_state(cls, state: State, horizon: int = 7, season: int = 7) -> ModelBank:
        bank = cls(horizon, season)
        for name, m in bank.models.items():
            if name in state["models"]:  # a snapshot from before a model was added lacks it
                m.load(state["models"][name])
        bank.published.load(state["published"])
        bank.chosen = state["chosen"]
        bank.learned_through = state["learned_through"]
        bank._recent.extend(state["recent"])
        bank._ewma = state["ewma"]
        bank._scale_sum, bank._scale_n = state["scale"]
        return bank
