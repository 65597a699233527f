"""Running error quantiles: calibrated bands, closed steps, and what a close scores."""

import numpy as np
import pytest

from models.quantiles import (
    CALIBRATION_RATE,
    LEVELS,
    MEAN,
    MIN_ERRORS,
    P10,
    P50,
    P90,
    WIDEN_RANGE,
    Bands,
    Calibration,
    Moments,
    Points,
    from_half,
    to_half,
    widen_band,
)

OPEN = np.zeros(1, bool)


def forecast(
    bands: Bands, bucket: int, mean: float, closed: np.ndarray | None = None
) -> np.ndarray:
    h = bands.horizon
    steps = bands.steps(
        np.full((1, h), mean), np.ones(1, bool), np.zeros(h, bool) if closed is None else closed
    )
    bands.issue(bucket, steps)
    return steps[0]


def test_intervals_are_ordered_non_negative_and_poisson_like_when_cold() -> None:
    bands = Bands(horizon=3)
    bands.take(np.array([-1]))
    steps = forecast(bands, 0, 4.0)
    assert np.all((steps[:, P10] >= 0) & (steps[:, P10] <= steps[:, P50]))
    assert np.all(steps[:, P50] <= steps[:, P90])
    assert steps[:, P90] - steps[:, MEAN] == pytest.approx([1.2816 * 2] * 3, rel=1e-3)


@pytest.mark.parametrize("noise", ["gauss", "skewed"])
def test_calibrated_p10_p90_covers_about_80_percent(noise: str) -> None:
    rng = np.random.default_rng(7)
    rows = 200
    bands = Bands(horizon=1)
    bands.take(np.full(rows, -1))
    hits = total = 0
    closed = np.zeros((1, 1), bool)
    for t in range(400):
        mean = np.full((rows, 1), 100.0)
        steps = bands.steps(mean, np.ones(rows, bool), np.zeros(1, bool))
        bands.issue(t, steps)
        y = 100 + (rng.normal(0, 10, rows) if noise == "gauss" else rng.exponential(10, rows))
        if t > 100:
            total += rows
            hits += int(np.sum((steps[:, 0, P10] <= y) & (y <= steps[:, 0, P90])))
        bands.learn(bands.settle(t + 1, True, closed), y)
    assert 0.76 <= hits / total <= 0.84


def test_each_close_scores_the_forecasts_of_the_closes_before_it_at_their_horizon() -> None:
    bands = Bands(horizon=2)
    bands.take(np.array([-1]))
    closed = np.zeros((2, 2), bool)
    forecast(bands, 0, 10.0)
    (first,) = bands.settle(1, True, closed)
    assert (first.k, first.steps[0, MEAN]) == (1, 10.0)
    forecast(bands, 1, 12.0)
    scored = bands.settle(2, True, closed)
    assert sorted((p.k, float(p.steps[0, MEAN])) for p in scored) == [(1, 12.0), (2, 10.0)]
    assert bands.settle(2, False, closed) == []  # the shop was closed: nothing to score


def test_a_step_forecast_closed_is_zero_and_moves_neither_bands_nor_moments() -> None:
    bands = Bands(horizon=2)
    bands.take(np.array([-1]))
    steps = forecast(bands, 0, 5.0, closed=np.array([True, False]))
    assert steps[0].tolist() == [0.0, 0.0, 0.0, 0.0]
    closed = np.array([[True, False], [False, False]])
    points = bands.settle(1, True, closed)
    bands.learn(points, np.array([7.0]))
    assert points[0].closed and bands.errors.tolist() == [[0, 0]]
    assert bands.mean_square().tolist() == [[0.0, 0.0]]


def test_error_moments_are_known_after_min_errors_points() -> None:
    moments = Moments(horizon=1)
    moments.take(np.array([-1]))
    closed = np.zeros((1, 1), bool)
    for t in range(MIN_ERRORS):
        assert not moments.moments()[2][0, 0]
        moments.issue(t, np.full((1, 1, 4), 3.0))
        moments.learn(moments.settle(t + 1, True, closed), np.array([5.0]))
    m2, m3, known = moments.moments()
    assert known[0, 0] and (m2[0, 0], m3[0, 0]) == pytest.approx((4.0, 8.0))


def test_a_model_band_keeps_the_mean_square_of_its_errors_but_no_cube() -> None:
    bands = Bands(horizon=1)
    bands.take(np.array([-1]))
    for t in range(MIN_ERRORS):
        forecast(bands, t, 3.0)
        bands.learn(bands.settle(t + 1, True, np.zeros((1, 1), bool)), np.array([5.0]))
    assert bands.known()[0, 0] and bands.mean_square()[0, 0] == pytest.approx(4.0)
    assert "m3" not in bands.state()


def test_moments_packed_between_closes_follow_float_moments_closely() -> None:
    moments = Moments(horizon=1)
    moments.take(np.array([-1, -1]))
    m2, m3 = np.zeros(2), np.zeros(2)
    rng = np.random.default_rng(0)
    for t in range(200):
        moments.issue(t, np.full((2, 1, 4), 3.0))
        y = rng.poisson([0.3, 40.0]).astype(float)
        moments.learn(moments.settle(t + 1, True, np.zeros((1, 1), bool)), y)
        e = y - 3.0
        m2 += (e * e - m2) * (1 / 56 if t else 1.0)
        m3 += (e**3 - m3) * (1 / 56 if t else 1.0)
    got2, got3, _ = moments.moments()
    assert moments.m2.dtype == np.int16 and moments.m3.dtype == np.int16
    assert got2[:, 0] == pytest.approx(m2, rel=1e-3) and got3[:, 0] == pytest.approx(m3, rel=1e-3)


def test_moments_saved_as_floats_load_as_their_codes() -> None:
    moments = Moments(horizon=2)
    moments.take(np.array([-1]))
    for t in range(MIN_ERRORS + 2):
        moments.issue(t, np.full((1, 2, 4), 3.0))
        moments.learn(moments.settle(t + 2, True, np.zeros((2, 2), bool)), np.array([5.0 + t]))
    m2, m3, known = moments.moments()
    old = {k: v for k, v in moments.state().items() if not k.endswith("_exp")}
    old["m2"], old["m3"] = m2, m3  # a snapshot from before the moments were packed
    restored = Moments(horizon=2)
    restored.load(old)
    assert [a.tolist() for a in restored.moments()] == [m2.tolist(), m3.tolist(), known.tolist()]


def test_half_precision_keeps_the_value_within_0_4_percent_over_the_whole_range() -> None:
    values = np.array([0.0, 1e-3, 0.37, 2.5, 999.0, 65504.0, 80995.0, 3e7, np.nan, np.inf])
    back = from_half(to_half(values))
    finite = np.isfinite(values)
    assert np.allclose(back[finite], values[finite], rtol=2**-8, atol=0)
    assert np.isnan(back[-2]) and back[-1] == np.inf
    assert to_half(values).dtype == np.uint16


def test_issued_forecasts_are_scored_as_issued_within_the_rounding() -> None:
    bands = Bands(horizon=2)
    bands.take(np.array([-1]))
    issued = forecast(bands, 0, 6.3)
    points = bands.settle(2, True, np.zeros((2, 2), bool))
    (step2,) = [p for p in points if p.k == 2]
    assert step2.steps[0] == pytest.approx(issued[1], rel=2**-8)
    assert bands.pending1.dtype == np.uint16


def test_rings_saved_as_floats_are_refused_not_read_as_half_precision_bits() -> None:
    bands = Bands(horizon=2)
    bands.take(np.array([-1]))
    forecast(bands, 0, 6.3)
    old = {k: v for k, v in bands.state().items()}
    old["pending0"] = from_half(old["pending0"]).astype(np.float32)  # a snapshot from before
    with pytest.raises(ValueError, match="pending0: float32 where uint16"):
        Bands(horizon=2).load(old)


def test_calibration_widens_a_half_missed_too_often_and_narrows_one_never_missed() -> None:
    calibration = Calibration()
    calibration.take(np.full(2, -1))
    steps = np.array([[5.0, 4.0, 5.0, 6.0]] * 2)
    y = np.array([9.0, 5.0])  # above p90 for row 0, inside for row 1
    to_the_cap = np.log(WIDEN_RANGE[1]) / (CALIBRATION_RATE * (1 - LEVELS[0]))
    for _ in range(int(to_the_cap) + 10):
        calibration.learn([Points(1, np.ones(2, bool), steps, False)], y)
    (below0, above0), (below1, above1) = calibration.widen.tolist()
    assert above0 == WIDEN_RANGE[1] and below0 == below1 == above1 < 1.0
    assert below1 >= WIDEN_RANGE[0]
    widened = Bands(horizon=1)
    widened.take(np.full(2, -1))
    plain = widened.steps(np.full((2, 1), 10.0), np.ones(2, bool), OPEN)
    out = widen_band(plain, calibration.widen)
    assert out[0, 0, P90] - out[0, 0, P50] == pytest.approx(
        WIDEN_RANGE[1] * (plain[0, 0, P90] - 10.0)
    )
    assert out[:, 0, P50].tolist() == plain[:, 0, P50].tolist()  # the p50 never moves


def test_calibration_widens_a_band_too_narrow_for_its_series_to_cover_80_percent() -> None:
    # the combination's quantile weights are pooled over a group: one series of the group can
    # be far noisier than its band says, and only its own misses tell
    rng = np.random.default_rng(3)
    rows, closes = 100, 4000  # one point a close: a real close scores up to seven
    covered = {}
    for calibrate in (False, True):
        published, calibration = Moments(horizon=1), Calibration()
        for part in (published, calibration):
            part.take(np.full(rows, -1))
        narrow = np.tile([[[100.0, 95.0, 100.0, 105.0]]], (rows, 1, 1))
        hits = total = 0
        for t in range(closes):
            steps = widen_band(narrow, calibration.widen) if calibrate else narrow
            published.issue(t, steps)
            y = 100 + rng.normal(0, 20, rows)
            if t >= closes * 3 // 4:
                total += rows
                hits += int(np.sum((steps[:, 0, P10] <= y) & (y <= steps[:, 0, P90])))
            calibration.learn(published.settle(t + 1, True, np.zeros((1, 1), bool)), y)
        covered[calibrate] = hits / total
    assert covered[False] < 0.25
    assert 0.74 <= covered[True] <= 0.86
