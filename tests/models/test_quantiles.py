import random

import pytest

from models.baselines import MovingAverage
from models.quantiles import MIN_ERRORS, Conformal, quantile


def test_quantile_interpolates() -> None:
    assert quantile([0.0, 10.0], 0.5) == 5.0
    assert quantile([1.0, 2.0, 3.0], 0.0) == 1.0
    assert quantile([1.0, 2.0, 3.0], 1.0) == 3.0


def test_intervals_are_ordered_non_negative_and_poisson_like_when_cold() -> None:
    m = Conformal(MovingAverage(3), horizon=3)
    m.learn_one(4)
    steps = m.forecast()
    assert steps is not None and len(steps) == 3
    for s in steps:
        assert 0 <= s.p10 <= s.p50 <= s.p90
        assert s.p90 - s.mean == pytest.approx(1.2816 * 2)


def test_calibrated_p10_p90_covers_about_80_percent() -> None:
    rng = random.Random(7)
    m = Conformal(MovingAverage(50), horizon=1, window=200)
    hits = total = 0
    for t in range(2000):
        y = 100 + rng.gauss(0, 10)
        steps = m.forecast()
        if steps and t > 300:
            total += 1
            hits += steps[0].p10 <= y <= steps[0].p90
        m.learn_one(y)
    assert 0.74 <= hits / total <= 0.86


def test_errors_are_recorded_per_horizon() -> None:
    m = Conformal(MovingAverage(1), horizon=2)
    m.learn_one(10)
    m.forecast()  # predicts 10, 10
    m.learn_one(12)  # horizon-1 error +2
    m.forecast()  # predicts 12, 12
    m.learn_one(15)  # horizon-2 error of the first forecast +5, horizon-1 error +3
    assert m.last_error() == 3
    assert m.recent_mae() is None  # fewer than MIN_ERRORS
    for _ in range(MIN_ERRORS):
        m.forecast()
        m.learn_one(15)
    assert m.recent_mae() is not None
