from models.online import HoltWinters


def test_holt_winters_learns_a_weekly_pattern_from_a_zero_start() -> None:
    week = [3, 5, 2, 0, 4, 8, 1]
    m = HoltWinters()
    for y in [0] * 7 + week * 6:  # an all-zero first season must not divide by zero
        m.learn_one(y)
    forecast = m.forecast(7)
    assert forecast is not None
    assert all(v >= 0 for v in forecast)
    assert sum(abs(f - y) for f, y in zip(forecast, week, strict=True)) / 7 < 1.0


def test_holt_winters_waits_for_two_seasons() -> None:
    m = HoltWinters(season=7)
    for y in range(13):
        m.learn_one(y)
    assert m.forecast(3) is None
    m.learn_one(1)
    assert m.forecast(3) is not None
