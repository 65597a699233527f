"""The learned combination: pooled non-negative weights per group and horizon, shrinkage of a
series toward its group, and a bank whose published forecast beats its best model."""

from __future__ import annotations

import numpy as np
import pytest

from models.bank import PUBLISHED, Bank
from models.combination import (
    GROUPS,
    NO_CHOICE,
    SAMPLED_ROWS,
    UNCLASSIFIED,
    Combination,
    combine,
    own_quantiles,
    substitute,
)
from models.demand_class import DemandClass
from models.quantiles import LEVELS, MEAN, P10, pinball, widen_band
from models.testing import close_of


def learned(c: Combination, buckets: int, truth: np.ndarray, models: list[np.ndarray]) -> None:
    for _ in range(buckets):
        c.learn(np.stack(models)[:, None, :, None], truth, np.ones(len(truth)), np.array([False]))


def test_a_missing_forecast_stands_in_as_the_mean_of_the_others() -> None:
    means = np.array([[1.0, np.nan, 3.0], [np.nan, np.nan, np.nan]])
    assert substitute(means)[0].tolist() == [1.0, 2.0, 3.0]
    assert np.isnan(substitute(means)[1]).all()


def test_each_demand_class_learns_its_own_weights() -> None:
    c = Combination(models=2, horizon=1)
    c.take(np.full(4, -1))
    smooth = np.array([4.0, 6.0, 0.0, 0.0])  # two series that sell daily, two that never do
    rng = np.random.default_rng(0)
    for b in range(80):
        # the last two sell now and then: model 1 knows when, model 0 always says 1
        y = smooth + np.array([0, 0, 1, 1]) * 5.0 * (b % 4 == 0)
        noise = rng.normal(0, 2, 4)
        model0 = np.where(np.arange(4) < 2, y, 1.0)
        model1 = np.where(np.arange(4) < 2, y + noise, y)
        c.learn(np.stack([model0, model1])[:, None, :, None], y, np.ones(4), np.array([False]))
    groups = [GROUPS[g] for g in c.groups()]
    assert groups == [DemandClass.SMOOTH] * 2 + [DemandClass.INTERMITTENT] * 2
    smooth_w = c.weights[GROUPS.index(DemandClass.SMOOTH), 0]
    sparse_w = c.weights[GROUPS.index(DemandClass.INTERMITTENT), 0]
    assert smooth_w[0] > 0.95 and smooth_w[1] < 0.05
    assert sparse_w[1] > 0.95 and sparse_w[0] < 0.05
    assert (c.weights >= 0).all()


def test_each_quantile_is_averaged_with_its_own_weights_and_they_stay_in_order() -> None:
    steps = np.array([[[[2.0, 1.0, 2.0, 3.0]]], [[[6.0, 0.0, 5.0, 9.0]]]])  # [models, 1, 1, 4]
    group = np.array([0])
    even = np.full((1, 1, 3, 2), 0.5)
    out = combine(steps, np.array([[[0.5, 0.25]]]), even, group)
    assert out.tolist() == [[[2.5, 0.5, 3.5, 6.0]]]
    crossed = np.array([[[[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]]])  # p10 from the wider model
    out = combine(steps, np.array([[[1.0, 0.0]]]), crossed, group)
    assert out.tolist() == [[[2.0, 0.0, 2.0, 3.0]]]


def test_a_model_not_ready_passes_its_quantile_weights_on_to_the_ready_ones() -> None:
    steps = np.array([
        [[[2.0, 1.0, 2.0, 3.0]], [[2.0, 1.0, 2.0, 3.0]]],
        [[[np.nan] * 4], [[6.0, 0.0, 5.0, 9.0]]],  # model 1 not ready for row 0
        [[[4.0, 3.0, 4.0, 5.0]], [[4.0, 3.0, 4.0, 5.0]]],
    ])  # fmt: skip
    weights = np.array([[[0.5, 0.0, 0.5]], [[1 / 3] * 3]])
    by_level = np.full((1, 1, 3, 3), 0.2)  # a sum below 1 shrinks the quantiles
    out = combine(steps, weights, by_level, np.array([0, 0]))
    # row 0: model 1's weight goes to the others evenly, as if it forecast their mean
    assert np.allclose(out[0, 0], [3.0, 0.6 * 2.0, 0.6 * 3.0, 0.6 * 4.0])
    assert np.allclose(out[1, 0], [4.0, 0.8, 2.2, 3.4])
    none = np.full((2, 1, 1, 4), np.nan)
    assert np.isnan(
        combine(none, np.zeros((1, 1, 2)), by_level[..., :2], np.array([0]))[0, 0, 1:]
    ).all()


@pytest.mark.parametrize("sd", [3.0, 1.0, 0.3])
def test_each_combined_quantile_learns_the_level_its_pinball_loss_asks_for(sd: float) -> None:
    """Model 0's p10 and p90 are 9 and 11, model 1's the true ones for noise of ``sd`` around
    10; both have the right median. The weights (not bound to sum to 1: a sum below 1
    shrinks a quantile, as an intermittent series' median wants) settle where each combined
    quantile is the true one, and stay there close after close, however steady the demand
    (a step that ignored how dense the truths are around the quantile swung the median of
    sd 1 by +-2 from close to close)."""
    c = Combination(models=2, horizon=1)
    c.take(np.full(1000, -1))
    rng = np.random.default_rng(5)
    q0 = np.array([9.0, 10.0, 11.0])
    q1 = 10.0 + sd * np.array([-1.2816, 0.0, 1.2816])
    q = np.broadcast_to(np.stack([q0, q1])[:, None, None], (2, 1, 1000, 3))
    steps = np.concatenate([np.full((2, 1, 1000, 1), 10.0), q], axis=-1)  # [models, k, n, 4]
    last = []
    for _ in range(200):
        y = rng.normal(10.0, sd, 1000)
        c.learn(steps, y, np.ones(1000), np.array([False]))
        w = c.quantile_weights[c.groups()[0], 0]  # [3 levels, 2 models]
        last.append(np.diag(w @ np.stack([q0, q1])))  # each level's weights on its quantiles
    settled = np.array(last[-50:])
    assert np.allclose(settled.mean(axis=0), q1, atol=0.1 * sd + 0.05), settled.mean(axis=0)
    assert (settled.std(axis=0) < 0.1 * sd + 0.05).all(), settled.std(axis=0)


def test_a_model_whose_own_quantiles_beat_the_combined_ones_is_published_as_it_is() -> None:
    """Model 1 knows each series' spread, model 0 gives every series the same band: the
    learned average still leans on model 0 after a few closes (its weights move a bounded
    step a close), so the group publishes model 1's own tails in the rows it forecasts. Both
    have the true median, which either's own quantile publishes as it is."""
    rows = 600
    rng = np.random.default_rng(3)
    sd = np.where(np.arange(rows) % 2 == 0, 0.5, 4.0)
    z = np.array([-1.2816, 0.0, 1.2816])
    own = 10.0 + sd[:, None] * z  # [rows, 3]
    flat = np.broadcast_to(10.0 + 2.0 * z, (rows, 3))
    q = np.stack([flat, own])[:, None]  # [models, horizon 1, rows, 3]
    steps = np.concatenate([np.full((2, 1, rows, 1), 10.0), q], axis=-1)
    steps[1, 0, :5] = np.nan  # model 1 forecast nothing for these rows
    c = Combination(models=2, horizon=1)
    c.take(np.full(rows, -1))
    for _ in range(15):
        y = rng.normal(10.0, sd)
        c.learn(steps, y, np.ones(rows), np.array([False]))
    group = c.groups()
    ((p10, p50, p90),) = c.choice()[np.unique(group), 0].tolist()
    assert (p10, p90) == (1, 1)
    fc = np.moveaxis(steps, 1, 2)  # [models, rows, horizon, 4]
    weights = np.full((rows, 1, 2), 0.5)
    averaged = combine(fc, weights, c.quantile_weights, group)
    own_picked = own_quantiles(fc, c.choice()[group])
    published = combine(fc, weights, c.quantile_weights, group, own_picked)
    tails = [P10, P10 + 2]
    assert np.allclose(published[5:, 0, tails], own[5:, [0, 2]])  # model 1's own where it forecast
    assert np.array_equal(published[:5, :, tails], averaged[:5, :, tails])  # the combined ones
    if p50 != NO_CHOICE:
        assert np.allclose(published[:, 0, P10 + 1], 10.0)
    y = rng.normal(10.0, sd)
    assert pinball(published[5:, 0, 1:], y[5:]).sum() < pinball(averaged[5:, 0, 1:], y[5:]).sum()
    # the calibration leaves a picked quantile as the model issued it, and widens the others
    mine = ~np.isnan(own_picked)
    assert mine[5:, 0, [0, 2]].all() and not mine[:5, 0, [0, 2]].any()
    widened = widen_band(published, np.full((rows, 2), 3.0), mine)
    assert np.array_equal(widened[5:, 0, tails], published[5:, 0, tails])
    assert (widened[:5, 0, P10 + 2] > published[:5, 0, P10 + 2]).all()
    assert (np.diff(widened[..., P10:], axis=-1) >= 0).all()  # still in order


def test_a_series_with_no_sales_yet_is_unclassified() -> None:
    c = Combination(models=1, horizon=1)
    c.take(np.full(1, -1))
    assert GROUPS[c.groups()[0]] == UNCLASSIFIED


def test_a_series_departs_from_its_group_only_as_far_as_its_evidence_allows() -> None:
    c = Combination(models=2, horizon=1)
    c.take(np.full(3, -1))
    c.weights[:] = [1.0, 0.0]  # the group trusts model 0
    means = np.array([[[10.0]] * 3, [[20.0]] * 3])  # [models, n, horizon]
    own_mse = np.array([[[100.0]] * 3, [[1.0]] * 3])  # each series knows model 1 is better
    weights = c.weigh(means, own_mse, np.array([0.0, 100.0, 1e6]))
    mean = (weights * np.moveaxis(means, 0, -1)).sum(axis=-1)
    assert mean[0, 0] == 10.0  # no evidence: the group's weights
    assert 10.0 < mean[1, 0] < mean[2, 0] < 20.0  # more evidence, further from the group
    assert mean[2, 0] > 19.0
    assert np.allclose(weights.sum(axis=-1), 1.0)
    unknown = np.full_like(own_mse, np.nan)
    assert (c.weigh(means, unknown, np.full(3, 1e6)) == [1.0, 0.0]).all()
    # the bands keep their moments in float32; an error of exactly 0 is known, not missing
    perfect = np.array([[[0.0]] * 3, [[np.nan]] * 3], np.float32)
    assert (c.weigh(means, perfect, np.full(3, 1e6)) == [1.0, 0.0]).all()


def test_state_and_load_continue_exactly() -> None:
    c = Combination(models=2, horizon=1)
    c.take(np.full(2, -1))
    learned(c, 20, np.array([3.0, 1.0]), [np.array([2.0, 1.0]), np.array([5.0, 0.0])])
    again = Combination(models=2, horizon=1)
    again.load({k: v.copy() for k, v in c.state().items()})
    means = np.array([[[2.0], [1.0]], [[4.0], [0.5]]])
    own = np.ones_like(means)
    evidence = np.array([5.0, 50.0])
    assert np.array_equal(c.weigh(means, own, evidence), again.weigh(means, own, evidence))


def mixed(rows: int, buckets: int, seed: int = 1) -> np.ndarray:
    """``[buckets, rows]`` of three kinds of series: a weekly pattern, a flat Poisson level
    and rare lumps, each a third of the rows."""
    rng = np.random.default_rng(seed)
    kind = np.arange(rows) % 3
    level = rng.gamma(2.0, 3.0, rows)
    out = np.zeros((buckets, rows))
    for b in range(buckets):
        weekly = level * (1 + np.sin(2 * np.pi * (b % 7) / 7))
        flat = rng.poisson(level)
        lumps = rng.poisson(level * 6) * (rng.random(rows) < 0.15)
        out[b] = np.select([kind == 0, kind == 1], [np.round(weekly), flat], lumps)
    return out


def test_on_mixed_series_the_published_forecast_is_no_worse_than_the_best_model() -> None:
    rows, buckets, window = 90, 200, 56
    y = mixed(rows, buckets)
    bank = Bank.default(horizon=7, season=7)
    bank.align([f"s{i}@UK" for i in range(rows)])
    sq: dict[str, float] = {}
    loss: dict[str, float] = {}
    for b in range(buckets):
        close = close_of(b, y[b], horizon=7)
        settled = bank.learn(close)
        bank.forecast(close)
        if b < buckets - window:
            continue
        for name, points in settled.points.items():
            for p in points:
                truth, steps = y[b][p.valid, None], p.steps[p.valid]
                err = truth[:, 0] - steps[:, MEAN]
                sq[name] = sq.get(name, 0.0) + float(err @ err)
                under = truth - steps[:, P10:]
                pinball = np.maximum(LEVELS * under, (LEVELS - 1) * under)
                loss[name] = loss.get(name, 0.0) + float(pinball.sum())
    published, published_loss = sq.pop(PUBLISHED), loss.pop(PUBLISHED)
    assert len(sq) == 4, sq  # every model but the LSTM, never offered here, was scored
    assert published <= min(sq.values()), (published, sq)
    assert published_loss <= min(loss.values()), (published_loss, loss)


def test_pooled_statistics_of_a_bank_with_other_models_start_fresh() -> None:
    old = Combination(models=4, horizon=1)
    old.take(np.full(2, -1))
    learned(old, 5, np.array([1.0, 2.0]), [np.ones(2)] * 4)
    new = Combination(models=5, horizon=1)
    new.load(old.state())
    assert new.gram.shape == (len(GROUPS), 1, 5, 5) and not new.gram.any()
    assert (new.sales == old.sales).all()  # the series' own statistics carry over


def test_a_snapshot_from_before_the_combination_loads_and_forecasts() -> None:
    bank = Bank.default(horizon=3)
    bank.align(["a@UK"])
    for b in range(10):
        bank.learn(close_of(b, [2.0], horizon=3))
        bank.forecast(close_of(b, [2.0], horizon=3))
    state = {
        k: v for k, v in bank.state().items()
        if not k.startswith(("combination.", "published."))
    }  # fmt: skip
    state["published.chosen"] = np.zeros((1, 3), np.int8)  # what the per-series pick kept
    restored = Bank.default(horizon=3)
    restored.load(state, ["a@UK"])
    restored.learn(close_of(10, [2.0], horizon=3))
    fc = restored.forecast(close_of(10, [2.0], horizon=3))
    assert fc.publishes.tolist() == [True] and np.isfinite(fc.published).all()


def trained_bank() -> Bank:
    """A bank of two series after 30 closes."""
    bank = Bank.default(horizon=3)
    bank.align(["a@UK", "b@UK"])
    for b in range(30):
        bank.learn(close_of(b, [2.0 + b % 3, 5.0], horizon=3))
        bank.forecast(close_of(b, [2.0 + b % 3, 5.0], horizon=3))
    return bank


def test_a_snapshot_from_before_the_quantile_weights_keeps_everything_else() -> None:
    bank = trained_bank()
    state = bank.state()
    old = {k: v for k, v in state.items() if k != "combination.quantile_weights"}
    restored = Bank.default(horizon=3)
    restored.load(old, ["a@UK", "b@UK"])
    c, r = bank.combination, restored.combination
    assert np.array_equal(r.sales, c.sales) and np.array_equal(r.weights, c.weights)
    assert np.array_equal(r.gram, c.gram)
    assert np.allclose(r.quantile_weights, 1 / len(bank.names))  # only they start fresh
    again = Bank.default(horizon=3)
    again.load(state, ["a@UK", "b@UK"])  # and a new snapshot keeps them
    assert np.array_equal(again.combination.quantile_weights, c.quantile_weights)
    assert not np.allclose(c.quantile_weights, 1 / len(bank.names))


def test_a_snapshot_from_before_the_pick_starts_its_evidence_at_zero() -> None:
    bank = trained_bank()
    state = bank.state()
    assert state["combination.edge_points"].max() > 0
    old = {k: v for k, v in state.items() if not k.startswith("combination.edge")}
    restored = Bank.default(horizon=3)
    restored.load(old, ["a@UK", "b@UK"])
    r, c = restored.combination, bank.combination
    assert not r.edge_points.any() and (r.choice() == NO_CHOICE).all()
    assert np.array_equal(r.quantile_weights, c.quantile_weights)
    again = Bank.default(horizon=3)
    again.load(state, ["a@UK", "b@UK"])
    assert np.array_equal(again.combination.edge, c.edge)
    assert np.array_equal(again.combination.choice(), c.choice())


def test_each_group_learns_its_quantile_weights_from_its_own_rows_only() -> None:
    """Rows of two groups, some with no forecast at all: each group's weights move only with
    the truths of its rows that had one."""
    c = Combination(models=2, horizon=1)
    c.take(np.full(6, -1))
    c.sales[:] = [0.0, 5, 0, 5, 0, 5]  # unclassified and (with these sizes) smooth, by turns
    c.open[:] = c.sales
    c.size1[:], c.size2[:] = 5 * c.sales, 5 * c.sales
    groups = c.groups()
    smooth, unclassified = groups[1], groups[0]
    q = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])  # [models, levels]
    issued = np.broadcast_to(q, (1, 6, 2, 3)).copy()
    issued[0, 4] = np.nan  # an unclassified row with no forecast
    before = c.quantile_weights.copy()
    y = np.array([0.0, 9.0, 0.0, 9.0, 100.0, 9.0])  # the row without a forecast says nothing
    steps = np.concatenate([issued[..., 1:2], issued], axis=-1)  # the p50 as the mean
    c.learn(steps.transpose(2, 0, 1, 3), y, np.ones(6), np.array([False]))
    moved = c.quantile_weights - before
    assert (moved[smooth] > 0).all()  # every truth of 9 above every quantile: all grow
    assert (moved[unclassified] < 0).all()  # truths of 0 below them: all shrink
    others = np.setdiff1d(np.arange(len(GROUPS)), [smooth, unclassified])
    assert not moved[others].any()


def test_a_group_too_large_learns_from_a_sample_of_its_rows_counted_for_all() -> None:
    """Three times ``SAMPLED_ROWS`` series of one group, model 0 right to within noise and
    model 1 biased: learned from about a third of the rows a close, each counting thrice, the
    pooled statistics keep their size and the weights are those of every row."""
    rows = 3 * SAMPLED_ROWS
    rng = np.random.default_rng(11)
    bank = Bank.default()
    bank.align([f"s{i}@x" for i in range(rows)])
    level = 5.0 + rng.gamma(2.0, 3.0, rows)  # every series sells most days: smooth
    full, sampled = Combination(models=2, horizon=1), Combination(models=2, horizon=1)
    for c in (full, sampled):
        c.take(np.full(rows, -1))
    for b in range(40):
        y = rng.poisson(level).astype(np.float64)
        steps = np.stack([level + rng.normal(0, 0.5, rows), level + 3.0])[:, None, :, None]
        full.learn(steps, y, np.ones(rows), np.array([False]))
        sampled.learn(steps, y, np.ones(rows), np.array([False]), bank.draws(b))
    group = GROUPS.index(DemandClass.SMOOTH)
    assert (full.groups() == group).all()
    taken = (bank.draws(39) < SAMPLED_ROWS / rows).sum()
    assert 0.9 * SAMPLED_ROWS < taken < 1.1 * SAMPLED_ROWS
    assert not np.array_equal(sampled.gram, full.gram)  # learned from other points
    assert np.allclose(sampled.gram[group], full.gram[group], rtol=0.1)
    assert np.allclose(sampled.weights[group], full.weights[group], atol=0.02)
    assert sampled.weights[group, 0, 0] > sampled.weights[group, 0, 1]  # the unbiased one
    assert np.allclose(sampled.edge_points[group], full.edge_points[group], rtol=0.1)


def test_a_series_draws_the_same_whatever_its_row() -> None:
    names = [f"s{i}@x" for i in range(1000)]
    bank, other = Bank.default(), Bank.default()
    bank.align(names)
    other.align(names[::-1][:700])  # other rows, fewer of them
    d = bank.draws(20)
    assert np.array_equal(other.draws(20), d[::-1][:700])
    assert not np.array_equal(bank.draws(21), d)  # each close samples anew
    assert ((d >= 0) & (d < 1)).all() and abs(d.mean() - 0.5) < 0.05
