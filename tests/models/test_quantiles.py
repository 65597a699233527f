import random

import pytest

from models.base import Context
from models.baselines import MovingAverage
from models.quantiles import MIN_ERRORS, Conformal, quantile

X = Context(weekday=0)


def test_quantile_interpolates() -> None:
    assert quantile([0.0, 10.0], 0.5) == 5.0
    assert quantile([1.0, 2.0, 3.0], 0.0) == 1.0
    assert quantile([1.0, 2.0, 3.0], 1.0) == 3.0


def test_intervals_are_ordered_non_negative_and_poisson_like_when_cold() -> None:
    m = Conformal(MovingAverage(3), horizon=3)
    m.learn_one(4, X)
    steps = m.forecast([X] * 3)
    assert steps is not None and len(steps) == 3
    for s in steps:
        assert 0 <= s.p10 <= s.p50 <= s.p90
        assert s.p90 - s.mean == pytest.approx(1.2816 * 2)


@pytest.mark.parametrize("noise", ["gauss", "skewed"])
def test_calibrated_p10_p90_covers_about_80_percent(noise: str) -> None:
    rng = random.Random(7)
    m = Conformal(MovingAverage(50), horizon=1)
    hits = total = 0
    for t in range(3000):
        y = 100 + (rng.gauss(0, 10) if noise == "gauss" else rng.expovariate(0.1))
        steps = m.forecast([X])
        if steps and t > 300:
            total += 1
            hits += steps[0].p10 <= y <= steps[0].p90
        m.learn_one(y, X)
    assert 0.76 <= hits / total <= 0.84


def test_errors_are_recorded_per_horizon_and_closed_days_are_not_scored() -> None:
    m = Conformal(MovingAverage(1), horizon=2)
    m.learn_one(10, X)
    m.forecast([X, X])  # predicts 10, 10
    assert [(s.k, s.step.mean) for s in m.learn_one(12, X)] == [(1, 10)]
    m.forecast([X, X])  # predicts 12, 12
    scored = m.learn_one(15, X)  # horizon 2 of the first forecast, horizon 1 of the second
    assert sorted((s.k, s.y - s.step.mean) for s in scored) == [(1, 3), (2, 5)]
    assert m.recent_mae() is None  # fewer than MIN_ERRORS
    m.forecast([X, X])
    assert m.learn_one(None, X) == []  # closed: nothing to score
    for _ in range(MIN_ERRORS):
        m.forecast([X, X])
        m.learn_one(15, X)
    assert m.recent_mae() is not None
