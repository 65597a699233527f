import numpy as np
import pytest

from models.evaluation import Prequential, parse_forecast_id, score


def fc(series: str, bucket: int, model: str, means: list[float]) -> dict:
    return {
        "forecast_id": f"{series}|{bucket}|{model}@1",
        "horizon": [{"mean": m, "p10": m - 1, "p50": m, "p90": m + 1} for m in means],
    }


def test_forecast_ids_parse_even_with_pipes_in_names() -> None:
    assert parse_forecast_id("a|b@UK|12|holt_winters@river-hw-1") == ("a|b@UK", 12, "holt_winters")


def test_scores_only_closed_targets_and_compares_with_seasonal_naive() -> None:
    truth = {("s@x", b): float(y) for b, y in enumerate([1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 9])}
    rows = [
        fc("s@x", 7, "seasonal_naive", [2, 3, 9]),  # targets 8, 9, 10
        fc("s@x", 7, "moving_average", [2, 3, 4]),
        fc("s@x", 9, "seasonal_naive", [9]),  # closed through 9: target 10 is not scored
        fc("s@x", 9, "moving_average", [9]),
    ]
    out = score(rows, truth)
    snaive, ma = out["seasonal_naive"], out["moving_average"]
    # snaive errors at targets 8, 9: |2-2|, |3-3|; target 10 > closed 9
    assert snaive["points"] == 2 and snaive["mae"] == 0
    assert ma["mae"] == 0
    assert out["published"]["points"] == 4
    assert snaive["coverage_p10_p90"] == 1.0


def test_relative_mae_and_mase() -> None:
    truth = {("s@x", b): float(b % 2) * 4 for b in range(30)}
    rows = [fc("s@x", b, "seasonal_naive", [truth[("s@x", b - 6)]]) for b in range(7, 28)]
    rows += [fc("s@x", b, "flat", [2.0]) for b in range(7, 28)]
    out = score(rows, truth)
    assert out["seasonal_naive"]["rel_mae_vs_seasonal_naive"] == 1.0
    # y alternates 0/4 so a weekly lag (odd) is always wrong by 4; flat 2 is wrong by 2
    assert out["flat"]["rel_mae_vs_seasonal_naive"] == pytest.approx(0.5)
    assert out["flat"]["mase"] == pytest.approx(0.5)


def test_closed_buckets_are_never_scored() -> None:
    truth = {("s@x", b): 5.0 for b in range(20) if b != 9}
    rows = [fc("s@x", 7, "m", [5, 0, 5]), fc("s@x", 12, "m", [1])]
    out = score(rows, truth, closed={9})
    assert out["m"]["points"] == 2 and out["m"]["mae"] == 0


def test_each_tail_of_the_band_is_counted_on_its_own() -> None:
    steps = np.array([[2.0, 1.0, 2.0, 3.0]] * 4)
    y = np.array([0.0, 1.0, 3.0, 5.0])  # below p10, on p10, on p90, above p90
    ev = Prequential()
    ev.add("m", 1, y, steps)
    m = ev.summary()["m"]
    assert (m["below_p10"], m["above_p90"], m["coverage_p10_p90"]) == (0.25, 0.25, 0.5)
    forecasts = [
        {"forecast_id": f"a@x|{b}|m@1", "horizon": [{"mean": 2.0, "p10": 1.0, "p50": 2.0,
                                                    "p90": 3.0}]}
        for b in range(5)
    ]  # fmt: skip
    scored = score(forecasts, {("a@x", b + 1): v for b, v in enumerate(y)}, season=1)["m"]
    assert (scored["below_p10"], scored["above_p90"]) == (0.25, 0.25)


def test_mae_rmse_and_pinball_are_relative_to_seasonal_naive_and_to_zeros() -> None:
    """A point forecast equal to a reference scores 1 against it on all three measures (a
    point forecast's pinball loss over p10/p50/p90 is half its absolute error)."""
    y = {("s@x", b): float(b % 3) for b in range(30)}

    def point(series: str, b: int, model: str, value: float) -> dict:
        step = {"mean": value, "p10": value, "p50": value, "p90": value}
        return {"forecast_id": f"{series}|{b}|{model}@1", "horizon": [step]}

    rows = [point("s@x", b, "snaive", y[("s@x", b - 6)]) for b in range(7, 29)]
    rows += [point("s@x", b, "zeros", 0.0) for b in range(7, 29)]
    out = score(rows, y)
    for measure in ("mae", "rmse", "pinball"):
        assert out["snaive"][f"rel_{measure}_vs_seasonal_naive"] == pytest.approx(1.0)
        assert out["zeros"][f"rel_{measure}_vs_zeros"] == pytest.approx(1.0)
    # a pattern of period 3 defeats the weekly lag: zeros beat seasonal naive on MAE
    assert out["zeros"]["rel_mae_vs_seasonal_naive"] < 1
    ev = Prequential()
    target = np.array([0.0, 2.0, 1.0])
    reference = np.abs(target - np.array([1.0, 1.0, 1.0]))
    ev.add("zeros", 1, target, np.zeros((3, 4)), reference=reference)
    m = ev.summary()["zeros"]
    assert m["rel_mae_vs_zeros"] == m["rel_rmse_vs_zeros"] == m["rel_pinball_vs_zeros"] == 1.0
    assert m["rel_mae_vs_seasonal_naive"] == pytest.approx(3 / 2)
    assert m["rel_rmse_vs_seasonal_naive"] == pytest.approx((5 / 2) ** 0.5)


def test_forecasts_of_any_length_are_scored_to_their_last_step() -> None:
    truth = {("s@x", b): 1.0 for b in range(30)}
    rows = [fc("s@x", 0, "m", [1.0] * 10), fc("s@x", 3, "m", [1.0] * 2), fc("s@x", 12, "m", [])]
    assert score(rows, truth, season=1)["m"]["points"] == 10 + 2


def test_each_model_reports_its_mean_weight_in_the_published_forecasts() -> None:
    p = Prequential()
    p.add_shares(["a", "b"], np.array([[1.0, 0.0], [0.5, 0.25]]))
    p.add_shares(["a", "b"], np.array([[0.0, 1.0]]))
    p.add("a", 1, np.array([1.0]), np.array([[1.0, 1.0, 1.0, 1.0]]))
    summary = p.summary()
    assert summary["published"]["forecasts"] == 3
    assert summary["a"]["weight"] == 0.5 and summary["b"]["weight"] == 1.25 / 3
