from models.bank import ModelBank


def test_bank_forecasts_every_ready_model_and_selects_by_recent_error() -> None:
    bank = ModelBank(horizon=7)
    for b in range(6):
        bank.learn(b, 5.0)
    forecasts, chosen = bank.forecast()
    assert [f.model for f in forecasts] == ["moving_average"]
    assert chosen == "moving_average"  # the only ready model

    week = [0, 10, 0, 10, 0, 10, 0]
    for b in range(6, 6 + 7 * 8):
        bank.learn(b, week[b % 7])
        bank.forecast()
    forecasts, chosen = bank.forecast()
    assert {f.model for f in forecasts} == {"seasonal_naive", "moving_average", "holt_winters"}
    # a strict weekly pattern: seasonal naive is exact, the flat average is not
    assert chosen in {"seasonal_naive", "holt_winters"}
    assert bank.models["seasonal_naive"].recent_mae() < bank.models["moving_average"].recent_mae()
    assert bank.rolling_features()["demand_sum_7"] == sum(week[(b % 7)] for b in range(55, 62))
