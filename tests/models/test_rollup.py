"""A SKU's rollup over its locations: reconciliation, spread, and how it is scored."""

from __future__ import annotations

import math

import numpy as np

from models.bank import PUBLISHED, SEASONAL_NAIVE, Settled
from models.evaluation import Prequential
from models.quantiles import Points
from models.rollup import DISPERSION, ROLLUP, Z90, combine, settle

CLOSED = [0.0, 0.0, 0.0, 0.0]


def sku(*locations: list[list[float]]) -> np.ndarray:
    """The SKU's steps ``[horizon, 4]`` from its locations' steps."""
    parts = np.array(locations, np.float64)
    return combine(parts, np.zeros(len(parts), int), 1)[0]


def test_one_location_is_its_own_rollup_exactly() -> None:
    steps = [[2.25, 0.5, 1.75, 4.1], CLOSED, [0.3, 0.0, 0.0, 1.0]]
    assert sku(steps).tolist() == steps


def test_skus_are_combined_apart() -> None:
    parts = np.array([[[1.0, 0, 1, 2]], [[2.0, 0, 2, 4]], [[5.0, 5, 5, 5]]])
    out = combine(parts, np.array([0, 1, 0]), 2)
    assert out[:, 0, 0].tolist() == [6.0, 2.0]
    assert out[1, 0].tolist() == [2.0, 0, 2, 4]


def test_the_mean_is_the_sum_of_the_location_means_and_quantiles_stay_ordered() -> None:
    locations = [
        [[10.0, 6.0, 9.5, 15.0], CLOSED],
        [[0.4, 0.0, 0.0, 2.0], [3.0, 1.0, 3.0, 5.0]],
        [[1.7, 0.0, 1.0, 4.0], [0.2, 0.0, 0.0, 0.0]],
    ]
    for k, (mean, p10, p50, p90) in enumerate(sku(*locations)):
        assert math.isclose(mean, sum(loc[k][0] for loc in locations))
        assert 0.0 <= p10 <= p50 <= p90


def test_a_closed_bucket_stays_closed() -> None:
    assert sku([CLOSED], [CLOSED], [CLOSED]).tolist() == [CLOSED]


def test_independent_locations_add_variances_not_bands() -> None:
    # four identical locations whose bands imply a variance above the floor: the SKU's band is
    # twice as wide as one location's (sqrt(4)), not four times, and centred on the mean
    # when the locations are symmetric
    part = [12.0, 12.0 - Z90 * 10, 12.0, 12.0 + Z90 * 10]  # variance 100 > DISPERSION * 12
    _, p10, p50, p90 = sku(*[[part]] * 4)[0]
    assert math.isclose(p50, 48.0)
    assert math.isclose(p90 - p50, 2 * (part[3] - part[2]))
    assert math.isclose(p50 - p10, 2 * (part[2] - part[1]))


def test_lumpy_locations_with_flat_bands_still_widen_the_sum() -> None:
    # a location that orders a box now and then: p10 = p50 = p90 = 0, mean 2. Twelve of them
    # are not certain to sell nothing: the floor gives each a variance of DISPERSION x mean
    mean, _, p50, p90 = sku(*[[[2.0, 0.0, 0.0, 0.0]]] * 12)[0]
    assert mean == 24.0
    # every part has the same gap (mean - median = 2), so the sum's gap is that gap, not 24
    assert math.isclose(p50, 22.0)
    assert math.isclose(p90 - p50, Z90 * math.sqrt(12 * DISPERSION * 2.0))


def test_skewed_parts_give_a_less_skewed_sum() -> None:
    # the mean - median gaps average (weighted by variance), they do not add
    mean, _, p50, _ = sku(*[[[5.0, 0.0, 2.0, 14.0]]] * 9)[0]
    assert math.isclose(mean - p50, 3.0)


def points(k: int, steps: list[list[float] | None]) -> Points:
    valid = np.array([s is not None for s in steps])
    arr = np.array([s if s is not None else [np.nan] * 4 for s in steps], np.float64)
    return Points(k, valid, arr, False)


def test_settle_scores_the_sum_of_what_the_locations_published_against_the_sku_demand() -> None:
    # rows: UK and FR of one SKU, and a location too new to have published that sold 4 units
    published = [
        points(1, [[7.0, 5.0, 7.0, 9.0], [2.0, 0.0, 2.0, 4.0], None]),
        points(2, [[6.0, 3.0, 6.0, 9.0], [2.0, 0.0, 1.0, 4.0], None]),
    ]
    naive = [points(1, [[6.0] * 4, [3.0] * 4, None]), points(2, [[5.0] * 4, None, None])]
    settled = Settled(
        9,
        ["A@UK", "A@FR", "A@DE"], np.array([8.0, 1.0, 4.0]), np.full(3, np.nan),
        {PUBLISHED: published, SEASONAL_NAIVE: naive}, {},
    )  # fmt: skip
    evaluation = Prequential()
    settle(settled, np.zeros(3, int), 1, evaluation)
    sums = evaluation.sums
    expected = sku([[7.0, 5.0, 7.0, 9.0]], [[2.0, 0.0, 2.0, 4.0]])[0]
    assert sums[f"{ROLLUP}|1|n"] == 1 and sums[f"{ROLLUP}|2|n"] == 1
    assert math.isclose(sums[f"{ROLLUP}|1|abs"], abs(13.0 - expected[2]))
    assert sums[f"{ROLLUP}|1|ref"] == abs(13.0 - (6.0 + 3.0))
    assert f"{ROLLUP}|2|ref" not in sums  # one location had no seasonal naive forecast
    assert f"{ROLLUP}|1|scaled_n" not in sums


def test_nothing_published_nothing_scored() -> None:
    settled = Settled(
        9, ["A@UK"], np.array([5.0]), np.full(1, np.nan), {PUBLISHED: [], SEASONAL_NAIVE: []}, {}
    )
    evaluation = Prequential()
    settle(settled, np.zeros(1, int), 1, evaluation)
    empty = Settled(9, [], np.zeros(0), np.zeros(0), {PUBLISHED: [], SEASONAL_NAIVE: []}, {})
    settle(empty, np.zeros(0, int), 0, evaluation)  # a partition with no active series
    assert not evaluation.sums
