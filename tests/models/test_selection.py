import json

from models.bank import PUBLISHED, ModelBank
from models.base import Context


def ctx(b: int, closed: bool = False) -> Context:
    return Context(weekday=b % 7, closed=closed)


def ahead(b: int) -> list[Context]:
    return [ctx(b + k) for k in range(1, 8)]


def test_bank_forecasts_every_ready_model_and_selects_by_recent_error() -> None:
    bank = ModelBank(horizon=7)
    for b in range(6):
        bank.learn(b, 5.0, ctx(b))
    forecasts, chosen = bank.forecast(ahead(5))
    assert {f.model for f in forecasts} == {"moving_average", "tsb"}
    assert chosen in {"moving_average", "tsb"}

    week = [0, 10, 0, 10, 0, 10, 0]
    for b in range(6, 6 + 7 * 12):
        bank.learn(b, week[b % 7], ctx(b))
        bank.forecast(ahead(b))
    _, chosen = bank.forecast(ahead(6 + 7 * 12))
    # a strict weekly pattern: the weekly models beat the flat ones on the p50
    assert chosen in {"seasonal_naive", "holt_winters", "online_regression"}
    assert bank.models["seasonal_naive"].recent_mae() < bank.models["moving_average"].recent_mae()


def test_closed_days_are_neither_learned_nor_scored_and_forecast_as_zero() -> None:
    bank = ModelBank(horizon=7)
    scored = []
    for b in range(70):
        closed = b % 7 == 5
        scored += bank.learn(b, None if closed else 4.0, ctx(b, closed))
        bank.forecast([ctx(b + k, (b + k) % 7 == 5) for k in range(1, 8)])
    # no scored point falls on a closed day, and every model forecasts it as zero
    assert scored and all(o.scored.y == 4.0 for o in scored)
    forecasts, _ = bank.forecast([ctx(70 + k, (70 + k) % 7 == 5) for k in range(1, 8)])
    closed_step = next(k for k in range(7) if (71 + k) % 7 == 5)
    for f in forecasts:
        assert f.steps[closed_step].mean == 0 and f.steps[closed_step].p90 == 0
    # the moving average never saw a zero
    assert bank.rolling_features()["demand_sum_7"] == 28.0


def test_the_published_forecast_is_scored_like_a_model() -> None:
    bank = ModelBank(horizon=7)
    outcomes = []
    for b in range(40):
        outcomes += bank.learn(b, float(b % 3), ctx(b))
        bank.forecast(ahead(b))
    published = [o for o in outcomes if o.model == PUBLISHED]
    assert published and {o.scored.k for o in published} == set(range(1, 8))
    assert all(o.scale is not None for o in published[-7:])


def test_a_restored_bank_forecasts_exactly_like_the_original() -> None:
    a = ModelBank(horizon=7)
    for b in range(60):
        a.learn(b, float((b * 7919) % 13), Context(b % 7, price=1.0 + b % 4))
        a.forecast(ahead(b))
    b_ = ModelBank.from_state(json.loads(json.dumps(a.state())))
    for b in range(60, 90):
        y = float((b * 104729) % 17)
        assert a.learn(b, y, ctx(b)) == b_.learn(b, y, ctx(b))
        assert a.forecast(ahead(b)) == b_.forecast(ahead(b))
