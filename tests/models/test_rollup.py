"""A SKU's rollup over its locations: reconciliation, spread, and how it is scored."""

from __future__ import annotations

import math

from models.bank import PUBLISHED, SEASONAL_NAIVE, Outcome
from models.quantiles import CLOSED, Scored, Step
from models.rollup import DISPERSION, ROLLUP, Z90, combine, settle


def test_one_location_is_its_own_rollup_exactly() -> None:
    steps = [Step(2.25, 0.5, 1.75, 4.1), CLOSED, Step(0.3, 0.0, 0.0, 1.0)]
    assert combine([steps]) == steps


def test_the_mean_is_the_sum_of_the_location_means_and_quantiles_stay_ordered() -> None:
    locations = [
        [Step(10.0, 6.0, 9.5, 15.0), Step(0.0, 0.0, 0.0, 0.0)],
        [Step(0.4, 0.0, 0.0, 2.0), Step(3.0, 1.0, 3.0, 5.0)],
        [Step(1.7, 0.0, 1.0, 4.0), Step(0.2, 0.0, 0.0, 0.0)],
    ]
    for k, step in enumerate(combine(locations)):
        assert math.isclose(step.mean, sum(loc[k].mean for loc in locations))
        assert 0.0 <= step.p10 <= step.p50 <= step.p90


def test_a_closed_bucket_stays_closed() -> None:
    assert combine([[CLOSED], [CLOSED], [CLOSED]]) == [CLOSED]


def test_independent_locations_add_variances_not_bands() -> None:
    # four identical locations whose bands imply a variance above the floor: the SKU's band is
    # twice as wide as one location's (sqrt(4)), not four times, and centred on the mean
    # when the locations are symmetric
    part = Step(12.0, 12.0 - Z90 * 10, 12.0, 12.0 + Z90 * 10)  # variance 100 > DISPERSION * 12
    (step,) = combine([[part]] * 4)
    assert math.isclose(step.p50, 48.0)
    assert math.isclose(step.p90 - step.p50, 2 * (part.p90 - part.p50))
    assert math.isclose(step.p50 - step.p10, 2 * (part.p50 - part.p10))


def test_lumpy_locations_with_flat_bands_still_widen_the_sum() -> None:
    # a location that orders a box now and then: p10 = p50 = p90 = 0, mean 2. Twelve of them
    # are not certain to sell nothing: the floor gives each a variance of DISPERSION x mean
    lumpy = Step(2.0, 0.0, 0.0, 0.0)
    (step,) = combine([[lumpy]] * 12)
    assert step.mean == 24.0
    # every part has the same gap (mean - median = 2), so the sum's gap is that gap, not 24
    assert math.isclose(step.p50, 22.0)
    assert math.isclose(step.p90 - step.p50, Z90 * math.sqrt(12 * DISPERSION * 2.0))


def test_skewed_parts_give_a_less_skewed_sum() -> None:
    # the mean - median gaps average (weighted by variance), they do not add
    skewed = Step(5.0, 0.0, 2.0, 14.0)
    (step,) = combine([[skewed]] * 9)
    assert math.isclose(step.mean - step.p50, 3.0)


def outcomes(*points: tuple[int, float, Step, float | None]) -> list[Outcome]:
    """A location's outcomes at one close: (k, y, published step, seasonal naive mean)."""
    out = []
    for k, y, step, naive in points:
        out.append(Outcome(PUBLISHED, Scored(k, y, step, False), 1.0, None))
        if naive is not None:
            s = Step(naive, naive, naive, naive)
            out.append(Outcome(SEASONAL_NAIVE, Scored(k, y, s, False), 1.0, abs(y - naive)))
    return out


def test_settle_scores_the_sum_of_what_the_locations_published_against_the_sku_demand() -> None:
    uk = outcomes((1, 8.0, Step(7.0, 5.0, 7.0, 9.0), 6.0), (2, 8.0, Step(6.0, 3.0, 6.0, 9.0), 5.0))
    fr = outcomes((1, 1.0, Step(2.0, 0.0, 2.0, 4.0), 3.0), (2, 1.0, Step(2.0, 0.0, 1.0, 4.0), None))
    # the SKU also sold 4 units in a location too new to have published anything
    scored = settle([uk, fr], 13.0)
    assert [o.model for o in scored] == [ROLLUP, ROLLUP]
    first, second = (o.scored for o in scored)
    assert (first.k, first.y, second.k, second.y) == (1, 13.0, 2, 13.0)
    assert first.step == combine([[Step(7.0, 5.0, 7.0, 9.0)], [Step(2.0, 0.0, 2.0, 4.0)]])[0]
    assert scored[0].reference_abs == abs(13.0 - (6.0 + 3.0))
    assert scored[1].reference_abs is None  # one location had no seasonal naive forecast
    assert scored[0].scale is None


def test_nothing_published_nothing_scored() -> None:
    assert settle([[], outcomes()], 5.0) == []
