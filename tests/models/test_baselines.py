from models.base import Context
from models.baselines import MovingAverage, SeasonalNaive
from models.intermittent import TSB

X = Context(weekday=0)


def test_seasonal_naive_needs_a_full_season_then_repeats_it() -> None:
    m = SeasonalNaive(season=7)
    for y in range(6):
        m.learn_one(y, X)
    assert m.forecast(7, [X] * 7) is None
    m.learn_one(6, X)
    assert m.forecast(9, [X] * 9) == [0, 1, 2, 3, 4, 5, 6, 0, 1]
    m.learn_one(10, X)
    assert m.forecast(1, [X]) == [1]


def test_a_closed_day_keeps_its_slot_instead_of_learning_zero() -> None:
    m = SeasonalNaive(season=3)
    for y in [4, 5, 6, 7, None, 9]:
        m.learn_one(y, X)
    # the closed slot repeats its value from a season before (5), not 0
    assert m.forecast(3, [X] * 3) == [7, 5, 9]


def test_moving_average_uses_only_open_buckets_of_its_window() -> None:
    m = MovingAverage(window=3)
    assert m.forecast(2, [X] * 2) is None
    for y in [100, 1, 2, None, None, 3]:
        m.learn_one(y, X)
    assert m.forecast(2, [X] * 2) == [2.0, 2.0]


def test_tsb_decays_the_probability_while_nothing_sells_and_ignores_closed_days() -> None:
    m = TSB(alpha=0.5, beta=0.5)
    m.learn_one(8, X)
    assert m.forecast(1, [X]) == [8.0]
    m.learn_one(None, X)  # closed: no evidence either way
    assert m.forecast(1, [X]) == [8.0]
    m.learn_one(0, X)
    m.learn_one(0, X)
    assert m.forecast(1, [X]) == [2.0]  # p 1 -> 0.5 -> 0.25, size stays 8
    m.learn_one(4, X)
    assert m.forecast(1, [X]) == [0.625 * 6]
