"""The oracles: the calibrated band's coverage (numpy's inverted-CDF quantiles per series, and
what the atoms of count data add to 80%) and the local level around each day."""

import numpy as np
import pytest

import models.oracle
from models.oracle import local_level, oracle_coverage


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


def test_the_local_level_reads_the_open_neighbours_either_side_and_leaves_the_day_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(models.oracle, "CHUNK", 7)  # points in several passes
    rng = np.random.default_rng(2)
    y = rng.poisson(2.0, (6, 40)).astype(float)
    is_open = rng.random(40) > 0.2
    open_cols = np.flatnonzero(is_open)
    rows = np.repeat(np.arange(6), len(open_cols))
    cols = np.tile(open_cols, 6)
    median, mean = local_level(y, is_open, rows, cols, k=3)
    for i, (r, c) in enumerate(zip(rows, cols, strict=True)):
        at = int(np.flatnonzero(open_cols == c)[0])
        around = [*open_cols[max(at - 3, 0) : at], *open_cols[at + 1 : at + 4]]
        assert median[i] == np.median(y[r, around])  # counts: exact in float32
        assert mean[i] == pytest.approx(np.mean(y[r, around]), rel=1e-6)

    with pytest.raises(ValueError, match="open buckets only"):
        local_level(y, is_open, np.array([0]), np.flatnonzero(~is_open)[:1], k=3)
