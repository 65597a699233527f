"""The bank: a snapshot of an earlier layout continues where it stopped."""

from __future__ import annotations

import numpy as np

from models.bank import Bank
from models.blockfloat import decode
from models.quantiles import EXPONENT
from models.testing import close_of

SERIES = ["a@UK", "b@UK", "c@FR"]
MOMENTS = (".m2", ".m3")


def run(bank: Bank, buckets: range) -> list[np.ndarray]:
    """Each close's published forecasts and moments."""
    rng = np.random.default_rng(buckets.start)
    out = []
    for b in buckets:
        c = close_of(b, rng.poisson([0.4, 3.0, 25.0]).astype(float).tolist(), horizon=7)
        bank.learn(c)
        fc = bank.forecast(c)
        out.append(np.concatenate([fc.published.ravel(), fc.m2.ravel(), fc.m3.ravel()]))
    return out


def before_packing(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``state`` as a snapshot from before the moments were packed: float32, no exponents."""
    old = {}
    for key, value in state.items():
        if key.endswith(MOMENTS):
            old[key] = decode(value, state[key + EXPONENT])
        elif not key.removesuffix(EXPONENT).endswith(MOMENTS):
            old[key] = value
    return old


def test_a_snapshot_with_float_moments_continues_as_the_bank_would_have() -> None:
    bank = Bank.default()
    bank.align(SERIES)
    run(bank, range(60))
    old = before_packing(bank.state())
    assert old["published.m3"].dtype == np.float32 and "bands.tsb.m2" + EXPONENT not in old
    restored = Bank.default()
    restored.load(old, SERIES)
    for got, want in zip(run(restored, range(60, 75)), run(bank, range(60, 75)), strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_model_quantile_the_combination_picks_is_published_as_the_model_issued_it() -> None:
    """The calibration widens the combined band, not a model's own quantiles where the
    combination publishes them: they were picked for their pinball loss as issued."""
    bank = Bank.default()
    bank.align(SERIES)
    run(bank, range(60))
    c = close_of(60, [0.0, 3.0, 30.0], horizon=7)
    bank.learn(c)
    m = bank.names.index("moving_average")
    combination = bank.combination
    combination.edge[:] = 0.0
    combination.edge[..., m] = 0.5  # its own p10, p50 and p90 beat the combined ones
    combination.edge_base[:] = 1.0
    combination.edge_points[:] = 1000.0
    assert (combination.choice() == m).all()
    bank.calibration.widen[:] = 3.0
    fc = bank.forecast(c)
    own = fc.steps[m][..., 1:]
    ready = ~np.isnan(own)
    assert ready.any() and (np.diff(own[ready[..., 0]], axis=-1) > 0).any()
    np.testing.assert_array_equal(fc.published[..., 1:][ready], own[ready])
    bank.combination.edge[:] = 0.0  # no pick: the same band is widened
    widened = bank.forecast(c).published
    assert (widened[..., 3] > fc.published[..., 3])[ready[..., 2]].any()
