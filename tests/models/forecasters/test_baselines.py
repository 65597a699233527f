"""The moving average: the mean of its window and the quantiles of its recent sample."""

import numpy as np

from models.bank import Bank
from models.forecasters.baselines import MovingAverage, sample_quantiles
from models.quantiles import LEVELS, Scored
from models.recent import Recent
from models.testing import close_of


def recent_of(demand: list[float]) -> Recent:
    recent = Recent()
    recent.take(np.array([-1]))
    for b, y in enumerate(demand):
        recent.update(b, True, np.array([y]), np.array([np.nan]))
    return recent


def test_sample_quantiles_are_numpys_inverted_cdf_over_each_rows_values() -> None:
    rng = np.random.default_rng(0)
    values = rng.poisson(rng.uniform(0, 5, (300, 1)), (300, 28)).astype(float)
    values[np.arange(28) >= rng.integers(1, 29, (300, 1))] = np.nan  # rows with 1 to 28 values
    want = [np.quantile(v[~np.isnan(v)], LEVELS, method="inverted_cdf") for v in values]
    np.testing.assert_array_equal(sample_quantiles(values, LEVELS), want)
    assert np.isnan(sample_quantiles(np.full((1, 4), np.nan), LEVELS)).all()


def test_an_intermittent_series_gets_a_median_of_zero_under_a_positive_mean() -> None:
    """Sold on 6 of the last 28 open days, 3 of the last 14: the median day sells nothing,
    what MAE rewards, while the mean keeps the units the reorder point needs."""
    recent = recent_of([12.0 if b % 5 == 2 else 0.0 for b in range(28)])
    steps, ready = MovingAverage(28, 14).forecast(close_of(27, horizon=3), recent)
    assert ready.tolist() == [True]
    np.testing.assert_array_equal(steps[0], [[72 / 28, 0.0, 0.0, 12.0]] * 3)


def test_the_quantiles_follow_the_last_sample_while_the_mean_reads_the_window() -> None:
    """14 days of 10, then 14 of nothing: the last two weeks sold nothing, the mean remembers."""
    recent = recent_of([10.0] * 14 + [0.0] * 14)
    steps, _ = MovingAverage(28, 14).forecast(close_of(27, horizon=1), recent)
    assert steps[0, 0].tolist() == [5.0, 0.0, 0.0, 0.0]
    steps, _ = MovingAverage(28, 28).forecast(close_of(27, horizon=1), recent)
    assert steps[0, 0].tolist() == [5.0, 0.0, 0.0, 10.0]


def test_the_bank_keeps_no_band_of_errors_for_the_moving_average() -> None:
    bank = Bank.default()
    bands = bank.bands[bank.names.index("moving_average")]
    assert type(bands) is Scored  # not Bands, its subclass with running error quantiles
