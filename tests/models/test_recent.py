"""The recent demand every model reads, and the demand peak the reorder points' floor reads."""

import numpy as np
import pytest

from models.recent import Peak, Recent


def fed(recent: Recent, days: list[float | None]) -> Recent:
    """``recent`` after one row's buckets: a value, or None for a closed bucket."""
    for b, y in enumerate(days):
        recent.update(b, y is not None, np.array([y or 0.0]), np.array([np.nan]))
    return recent


def test_the_peak_is_the_largest_span_of_demand_and_fades_by_half_each_half_life() -> None:
    recent = Recent(season=7, peak=Peak(span=3, half_life=10.0))
    recent.take(np.array([-1]))
    fed(recent, [1.0, 1.0, 60.0, 1.0, 1.0])  # the spans (1, 60, 1) and (60, 1, 1) sell 62
    assert recent.peak.tolist() == [62.0]
    fed(recent, [1.0, 1.0, 1.0])  # three buckets after the last span with the order in it
    assert recent.peak.tolist() == pytest.approx([62.0 * 0.5 ** (3 / 10)], rel=1e-6)
    # closed buckets add nothing but the peak still fades with time
    before = float(recent.peak[0])
    fed(recent, [None] * 10)
    assert recent.peak.tolist() == pytest.approx([before / 2], rel=1e-6)


def test_no_half_life_keeps_no_peak() -> None:
    recent = Recent(season=7, peak=Peak(span=3, half_life=0.0))
    recent.take(np.array([-1]))
    assert fed(recent, [1.0, 60.0, 1.0]).peak.tolist() == [0.0]


def test_a_state_from_before_the_peak_starts_it_from_the_values_it_keeps() -> None:
    rule = Peak(span=3, half_life=100.0)
    recent = fed(Recent(season=7, window=8, peak=rule), [])
    recent.take(np.array([-1, -1]))
    for b, y in enumerate([[1.0, 5.0], [9.0, 5.0], [1.0, 5.0], [0.0, 5.0], [2.0, 5.0]]):
        recent.update(b, True, np.array(y), np.full(2, np.nan))
    old = {k: v for k, v in recent.state().items() if k != "peak"}
    restored = Recent(season=7, window=8, peak=rule)
    restored.load(old)
    assert restored.peak.tolist() == [11.0, 15.0]  # 1 + 9 + 1, and 5 + 5 + 5
    assert restored.peak.dtype == np.float32
