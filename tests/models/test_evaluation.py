import numpy as np
import pytest

from models import evaluation
from models.bank import Settled
from models.evaluation import Prequential, parse_forecast_id, score
from models.quantiles import Points


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


def naive_sums(model: str, k: int, y, steps, scale, reference) -> dict[str, float]:
    """``Prequential``'s sums of one model's points, one point at a time."""
    out: dict[str, float] = {}

    def add(field: str, v: float) -> None:
        out[f"{model}|{k}|{field}"] = out.get(f"{model}|{k}|{field}", 0.0) + float(v)

    for t, (mean, p10, p50, p90), s, r in zip(y, steps, scale, reference, strict=True):
        pin = sum(
            max(q * (t - v), (q - 1) * (t - v)) for q, v in ((0.1, p10), (0.5, p50), (0.9, p90))
        )
        for field, v in (("n", 1), ("abs", abs(t - p50)), ("abs_mean", abs(t - mean)),
                         ("sq", (t - mean) ** 2), ("pinball", pin), ("y_abs", abs(t)),
                         ("y_sq", t * t), ("covered", p10 <= t <= p90), ("below", t < p10),
                         ("above", t > p90)):  # fmt: skip
            add(field, v)
        if s > 0:
            add("scaled", abs(t - p50) / s)
            add("scaled_n", 1)
        if not np.isnan(r):
            for field, v in (("ref", r), ("ref_abs", abs(t - p50)), ("ref_sq", r * r),
                             ("ref_err_sq", (t - mean) ** 2), ("ref_pinball", pin)):  # fmt: skip
                add(field, v)
    return out


@pytest.mark.parametrize("chunk", [16_384, 7])
def test_a_close_s_points_sum_as_each_point_scored_alone(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every model of a close is scored at once, in chunks of rows; the sums are each
    point's, added up, with rows a model did not score, unknown scales and a missing
    reference left out."""
    monkeypatch.setattr(evaluation, "SCORED_ROWS", chunk)
    rng = np.random.default_rng(3)
    n = 50
    y = rng.poisson(1.5, n).astype(float)
    scale = np.where(rng.random(n) < 0.3, np.nan, rng.random(n))
    scale[:5] = 0.0
    reference = np.where(rng.random(n) < 0.4, np.nan, rng.random(n) * 3)
    points: dict[str, list[Points]] = {}
    for model in ("a", "b", "none"):
        points[model] = []
        for k in (1, 2):
            valid = rng.random(n) < (0.0 if model == "none" else 0.7)
            q = np.sort(rng.random((n, 3)) * 4, axis=1)
            steps = np.column_stack([q.mean(axis=1), q])
            steps[~valid] = np.nan
            points[model].append(Points(k, valid, steps, False))
    settled = Settled(0, [f"s{i}" for i in range(n)], y, scale, points, {1: reference})
    ev = Prequential()
    ev.add_settled(settled)
    expected: dict[str, float] = {}
    for model, ps in points.items():
        for p in ps:
            ref = reference if p.k == 1 else np.full(n, np.nan)
            v = p.valid
            expected |= naive_sums(model, p.k, y[v], p.steps[v], scale[v], ref[v])
    assert ev.sums.keys() == expected.keys()
    assert ev.sums == pytest.approx(expected, rel=1e-12)


def test_points_without_scales_sum_as_points_whose_scales_are_unknown() -> None:
    """A rollup has no MASE scale: its sums are those of unknown scales."""
    rng = np.random.default_rng(5)
    y = rng.poisson(1.0, 3000).astype(float)
    steps = np.sort(rng.random((3000, 4)) * 3, axis=1)
    reference = rng.random(3000)
    without, unknown = Prequential(), Prequential()
    without.add("rollup", 1, y, steps, None, reference)
    unknown.add("rollup", 1, y, steps, np.full(3000, np.nan), reference)
    assert without.sums == pytest.approx(unknown.sums, rel=1e-12)
    # as floats: an object array made every point's product a Python operation
    assert evaluation._per_scale(None, 3)[1].dtype == np.float64
