from models.base import Context
from models.online import HoltWinters
from models.regression import OnlineRegression

X = Context(weekday=0)


def test_holt_winters_learns_a_weekly_pattern_from_a_zero_start() -> None:
    week = [3, 5, 2, 0, 4, 8, 1]
    m = HoltWinters()
    for y in [0] * 7 + week * 6:  # an all-zero first season must not divide by zero
        m.learn_one(y, X)
    forecast = m.forecast(7, [X] * 7)
    assert forecast is not None
    assert all(v >= 0 for v in forecast)
    assert sum(abs(f - y) for f, y in zip(forecast, week, strict=True)) / 7 < 1.0


def test_holt_winters_waits_for_two_seasons() -> None:
    m = HoltWinters(season=7)
    for y in range(13):
        m.learn_one(y, X)
    assert m.forecast(3, [X] * 3) is None
    m.learn_one(1, X)
    assert m.forecast(3, [X] * 3) is not None


def test_holt_winters_passes_a_closed_day_without_learning_it() -> None:
    week = [3, 5, 2, 0, 4, 8, 1]
    m = HoltWinters()
    for y in week * 6:
        m.learn_one(y, X)
    before = m.forecast(7, [X] * 7)
    m.learn_one(None, X)  # closed: filled with its own forecast
    after = m.forecast(6, [X] * 6)
    assert before is not None and after is not None
    assert [round(v, 6) for v in after] == [round(v, 6) for v in before[1:]]


def test_online_regression_learns_the_weekday_profile_and_responds_to_price() -> None:
    days = [Context(weekday=d % 7, price=2.0) for d in range(280)]
    m = OnlineRegression()
    for x in days:
        m.learn_one(12.0 if x.weekday == 2 else 3.0, x)
    forecast = m.forecast(7, days[273:280])
    assert forecast is not None
    by_weekday = dict(zip((x.weekday for x in days[273:280]), forecast, strict=True))
    assert by_weekday[2] > 2 * max(v for wd, v in by_weekday.items() if wd != 2)
    assert "price" in m.state()["weights"]
