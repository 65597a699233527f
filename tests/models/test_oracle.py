"""The calibrated oracle's coverage: numpy's inverted-CDF quantiles per series, and what the
atoms of count data add to 80%."""

import numpy as np
import pytest

from models.oracle import oracle_coverage


def test_it_uses_each_series_own_inverted_cdf_quantiles() -> None:
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 40, 8_000)
    y = rng.poisson(rng.uniform(0, 6, 40)[codes]).astype(float)
    inside = below = 0
    for c in range(40):
        v = y[codes == c]
        lo, hi = np.quantile(v, [0.1, 0.9], method="inverted_cdf")
        inside += np.sum((v >= lo) & (v <= hi))
        below += np.sum(v < lo)
    out = oracle_coverage(codes, y)
    assert out["coverage"] == pytest.approx(inside / len(y))
    assert out["below_p10"] == pytest.approx(below / len(y))


def test_continuous_truths_are_covered_80_percent_and_intermittent_ones_more() -> None:
    rng = np.random.default_rng(1)
    codes = np.repeat(np.arange(50), 200)
    smooth = oracle_coverage(codes, rng.normal(100, 10, len(codes)))
    assert smooth["coverage"] == pytest.approx(0.8, abs=0.01)
    sparse = rng.binomial(1, 0.1, len(codes)) * rng.poisson(4, len(codes)).astype(float)
    out = oracle_coverage(codes, sparse)
    assert out["below_p10"] == 0.0 and out["coverage"] > 0.85
