from models.baselines import MovingAverage, SeasonalNaive


def test_seasonal_naive_needs_a_full_season_then_repeats_it() -> None:
    m = SeasonalNaive(season=7)
    for y in range(6):
        m.learn_one(y)
    assert m.forecast(7) is None
    m.learn_one(6)
    assert m.forecast(9) == [0, 1, 2, 3, 4, 5, 6, 0, 1]
    m.learn_one(10)
    assert m.forecast(1) == [1]


def test_moving_average_uses_only_its_window() -> None:
    m = MovingAverage(window=3)
    assert m.forecast(2) is None
    for y in [100, 1, 2, 3]:
        m.learn_one(y)
    assert m.forecast(2) == [2.0, 2.0]
