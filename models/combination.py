"""The published forecast: the bank's models combined with weights learned online, per
demand class and horizon, from the errors of the partition's series pooled together: the
means with weights learned for squared error, each quantile with weights of its own learned
for its pinball loss (``combine``).

Picking one model per series by its recent error cost more than it gained on noisy,
intermittent series: a series' few recent points rarely tell the models apart, so the pick
follows noise, and it favours models that forecast near zero, which costs RMSE. Pooling the
evidence of every series of a class removes most of that noise.

For each group (a demand class of Syntetos and Boylan, ``models.demand_class``, or
``UNCLASSIFIED`` for a series with too few recent sales to classify) and each horizon, the
combination keeps exponentially forgotten least-squares statistics of the models' issued
means against the truths (``gram = sum w f f^T``, ``cross = sum w f y``), and solves for
non-negative weights (stacking, Breiman 1996) with a ridge pull toward the equal weights, so
a group with little data starts as the plain average. Each row counts with weight
``1 / sqrt(max(scale, 1))`` (``scale`` the series' in-sample seasonal naive error): unweighted,
the pooled squared errors are the few largest series', which served RMSE and cost MAE;
weighted by ``1 / scale``, the reverse (docs/forecasting.md has the measurements).

A series departs from its group's weights only as far as its own evidence allows: its own
weights (inverse mean square error of each model, from the bands) enter with credibility
``n / (n + prior)``, where ``n`` is the number of errors its smoothed moments remember
(Buhlmann's credibility, the shrinkage of a series toward its group).

A model not ready for a row is replaced by the mean of the ready models there, when learning
as when forecasting, so the weights keep one meaning while models come and go.

The quantiles are averaged too (Vincentization), each level with weights of its own, learned
for what a quantile is judged by, its pinball loss: for each group, horizon and level, one
multiplicative step a close (unnormalised exponentiated gradient, Kivinen and Warmuth 1997)
on the pooled pinball loss of the combined quantile, damped Newton: its slope divided by how
fast the slope turns with the weight (the truths' density at the quantile, from the models'
band, times the quantile squared), so one rate fits series of every size and steady demand,
where the slope turns fast, does not make the weights swing. The weights need not sum to 1:
a sum below 1 shrinks a quantile, as the median of an intermittent series wants (it is 0 on
most days); each weight stays within [MIN_WEIGHT, MAX_WEIGHT], so a model that improves,
such as a newly trained LSTM, is never locked out. On the full year, with the LSTM's own
quantiles in the bank (``models.forecasters.injected``), that scored a published MAE of
0.649 and pinball 0.543 x seasonal naive's over all series, against 0.681 and 0.565 when the
means' weights, learned for squared error, also averaged the quantiles (docs/accuracy.md).
The learned average cannot always reach a model's own quantile: its weights are shared by
every row of the group and move a bounded step a close, and a model's quantiles may have a
shape per series that no average of the others' has (the LSTM's, trained for them on every
series). So the combination also pools, per group, horizon and level, the pinball loss of
the combined quantile against each model's own over the rows that model forecast, and
publishes a model's own quantile instead where it has been lower (``Combination.choice``):
the published quantile is then the best of them over the recent closes, by the evidence of
every series of the group.
Averaging the models' quantiles had beaten bands of the combination's own errors (0.683 and
0.558 against 0.709 and 0.580): a running median of errors, mostly 0 on intermittent series,
lags the models' medians.

>>> c = Combination(models=2, horizon=1)
>>> c.take(np.array([-1, -1]))
>>> y = np.array([3.0, 5.0])
>>> for b in range(60):  # model 0 is right, model 1 is off by 2 either way
...     off = y + 2 * (-1) ** b
...     means = np.stack([y, off])[:, None, :, None]  # [models, horizon, series, 1]
...     c.learn(means, y, np.ones(2), np.array([False]))
>>> c.weights[c.groups(), 0].round(1).tolist()
[[1.0, 0.0], [1.0, 0.0]]
"""

from __future__ import annotations

import itertools

import numpy as np

from models.base import Columns, State
from models.demand_class import ADI_CUT, CV2_CUT, DemandClass
from models.quantiles import LEVELS, MEAN, P10, Z90, in_order, pinball

__all__ = [
    "GROUPS",
    "NO_CHOICE",
    "POOLED",
    "UNCLASSIFIED",
    "Combination",
    "combine",
    "own_quantiles",
    "substitute",
]

UNCLASSIFIED = "unclassified"
# the arrays learned from every series of the partition together; a state without one loads
POOLED = ("gram", "cross", "weights", "quantile_weights", "edge", "edge_base", "edge_points")
GROUPS = [*map(str, DemandClass), UNCLASSIFIED]  # in the order of the group indices
CLASS_DECAY = 0.99  # per open bucket: the class follows about the last hundred trading days
MIN_SALES = 1.5  # recent sales (decayed count) below which a series is not classified
MEMORY = 0.98  # per trading close: the pooled statistics follow about the last fifty
RIDGE = 1e-3  # pull toward equal weights, relative to the statistics' mean diagonal
PRIOR = 1000.0  # errors a series needs before its own weights count as much as its group's
ITERATIONS = 50  # projected gradient steps per refit, warm-started from the last weights
# a damped Newton step on the pooled pinball loss (docs/accuracy.md: 0.3 and 0.5 scored a
# published MAE of 0.649 and 0.650 x seasonal naive's on the full year, pinball 0.543 and
# 0.546; steady demand settles at both, tests/models/test_combination.py)
QUANTILE_RATE = 0.3
MAX_STEP = 1.0  # in log weight, per close: a first close of a new group moves e-fold at most
MIN_WIDTH = 0.5  # units: demand is a count, and a narrower band says nothing of its density
# the normal density at p10, p50 and p90 per unit of a p10-p90 width (2.563 standard deviations)
DENSITY = np.exp(-0.5 * np.array([Z90, 0.0, Z90]) ** 2) / np.sqrt(2 * np.pi) * 2 * Z90
MIN_WEIGHT, MAX_WEIGHT = 1e-3, 2.0
# added to each weight's curvature: a group of a few series, whose every truth swings the
# slope, moves its weights slowly, as the means' ridge starts them even
QUANTILE_PRIOR = 100.0
CHOICE_POINTS = 100.0  # forgotten points a model must have forecast in the group and horizon
NO_CHOICE = -1  # the combined quantile is published
# rows of a group that its pooled statistics learn from at a close, at most: a random sample
# of a larger group, each of its rows counting for those left out. Pooled weights need
# thousands of points, not a million series' worth, and learning them was the close's largest
# step at 12,500 series a partition (docs/benchmark.md)
SAMPLED_ROWS = 2048


def substitute(values: np.ndarray, axis: int = 1) -> np.ndarray:
    """``values`` with each NaN replaced by the mean of the others along ``axis`` (the
    models; a row with none stays NaN).

    >>> substitute(np.array([[1.0, np.nan, 3.0], [np.nan, np.nan, np.nan]])).tolist()
    [[1.0, 2.0, 3.0], [nan, nan, nan]]
    """
    missing = np.isnan(values)
    if not missing.any():
        return values
    count = values.shape[axis] - missing.sum(axis=axis, keepdims=True)
    # not nansum: it copies and tests every value again, and this runs over every forecast
    # of a close; the zeroed copy takes the means in place
    out = np.where(missing, 0.0, values)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = out.sum(axis=axis, keepdims=True) / count
    np.copyto(out, mean, where=missing)
    return out


def _sample(group: np.ndarray, draw: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The rows a close learns from, each group's together in row order, and each group's
    count of rows: all of a group of at most ``SAMPLED_ROWS``, of a larger one those whose
    ``draw`` falls below ``SAMPLED_ROWS / count`` (about ``SAMPLED_ROWS`` of them).

    >>> rows, counts = _sample(np.array([1, 0, 1, 1]), None)
    >>> rows.tolist(), counts.tolist()
    ([1, 0, 2, 3], [1, 3, 0, 0, 0])
    """
    counts = np.bincount(group, minlength=len(GROUPS))
    rows = np.arange(len(group))
    if draw is not None and counts.max(initial=0) > SAMPLED_ROWS:
        share = np.minimum(SAMPLED_ROWS / np.maximum(counts, 1), 1.0)
        rows = np.flatnonzero(draw < share[group])
    return rows[np.argsort(group[rows], kind="stable")], counts


def combine(
    steps: np.ndarray,
    weights: np.ndarray,
    quantile_weights: np.ndarray,
    group: np.ndarray,
    own: np.ndarray | None = None,
) -> np.ndarray:
    """The weighted sum ``[n, horizon, 4]`` of the models' (mean, p10, p50, p90) ``steps
    [models, n, horizon, 4]``: the mean a linear pool by ``weights [n, horizon, models]``
    (``Combination.weigh``), each quantile a quantile average by the weights of its own of
    each row's group (``quantile_weights [groups, horizon, 3, models]``, ``group [n]``), put
    in order. A model not ready for a row (NaN) stands in as the mean of the ready ones
    there, so its quantile weights go to them evenly; a row with none stays NaN. Where
    ``own [n, horizon, 3]`` (``own_quantiles``: the models ``Combination.choice`` picks) is
    not NaN, it replaces the average.

    >>> steps = np.array([[[[2.0, 1.0, 2.0, 3.0]]], [[[4.0, 0.0, 4.0, 9.0]]]])
    >>> even = np.full((1, 1, 2), 0.5)
    >>> by_level = np.array([[[[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]]])
    >>> combine(steps, even, by_level, np.array([0])).tolist()
    [[[3.0, 1.0, 3.0, 9.0]]]
    """
    f = substitute(steps, axis=0)
    out = np.empty(steps.shape[1:])
    out[..., MEAN] = np.einsum("mnh,nhm->nh", np.nan_to_num(f[..., MEAN]), weights)
    quantiles = np.zeros((*steps.shape[1:3], len(LEVELS)))
    for m in range(len(steps)):
        quantiles += f[m, ..., P10:] * quantile_weights[..., m][group]
    if own is not None:
        np.copyto(quantiles, own, where=~np.isnan(own))
    in_order(quantiles, out[..., P10:])
    return out


def own_quantiles(steps: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """The quantiles ``[n, horizon, 3]`` that ``chosen`` (each row's ``Combination.choice``)
    publishes as a model's own: that model's, from ``steps [models, n, horizon, 4]``; NaN
    where it names none or the model did not forecast the row (the combined quantile stands).

    >>> steps = np.array([[[[2.0, 1.0, 2.0, 3.0]]], [[[np.nan] * 4]]])
    >>> own_quantiles(steps, np.array([[[0, NO_CHOICE, 1]]])).tolist()
    [[[1.0, nan, nan]]]
    """
    model = np.where(chosen == NO_CHOICE, 0, chosen)
    own = np.take_along_axis(np.moveaxis(steps[..., P10:], 0, -1), model[..., None], -1)
    return np.where(chosen == NO_CHOICE, np.nan, own[..., 0])


class Combination(Columns):
    def __init__(self, models: int, horizon: int = 7) -> None:
        super().__init__()
        self.models, self.horizon = models, horizon
        # decayed counts since the first sale: open buckets, sales, their sizes and squares
        for name in ("open", "sales", "size1", "size2"):
            self.column(name, 0.0, (), np.float32)
        self._fresh_pooled()

    def _fresh_pooled(self) -> None:
        shape, models = (len(GROUPS), self.horizon), self.models
        self.gram = np.zeros((*shape, models, models))
        self.cross = np.zeros((*shape, models))
        self.weights = np.full((*shape, models), 1.0 / models)
        self.quantile_weights = np.full((*shape, len(LEVELS), models), 1.0 / models)
        # forgotten sums, over the rows each model forecast, of the combined quantile's
        # pinball loss less the model's own (edge) and of the combined quantile's (edge_base)
        self.edge = np.zeros((*shape, len(LEVELS), models))
        self.edge_base = np.zeros((*shape, len(LEVELS), models))
        self.edge_points = np.zeros((*shape, models))

    def groups(self) -> np.ndarray:
        """Each row's group: its index into ``GROUPS``."""
        sales = np.maximum(self.sales, 1e-9)
        mean = self.size1 / sales
        with np.errstate(divide="ignore", invalid="ignore"):
            cv2 = np.where(mean > 0, self.size2 / sales / mean**2 - 1.0, 0.0)
        frequent, steady = self.open / sales < ADI_CUT, cv2 < CV2_CUT
        out = np.where(frequent, np.where(steady, 0, 1), np.where(steady, 2, 3))
        return np.where(self.sales < MIN_SALES, GROUPS.index(UNCLASSIFIED), out)

    def learn(
        self,
        steps: np.ndarray,
        y: np.ndarray,
        scale: np.ndarray,
        closed: np.ndarray,
        draw: np.ndarray | None = None,
    ) -> None:
        """Learn an open bucket: ``steps[m, j] [n, 4]`` are model ``m``'s (mean, p10, p50,
        p90) issued ``k`` = 1 + ``j`` buckets before it (NaN: not issued; ``[..., 1]``: the
        means alone, and the quantile weights stay), ``closed[j]`` whether that step was
        forecast as a closed bucket (then it says nothing of the models' everyday errors).
        Models come first: replacing a model's missing forecasts sums whole blocks.
        ``draw [n]``: each row's uniform draw in [0, 1) for this close, by which a group of
        more than ``SAMPLED_ROWS`` rows is sampled (None: every row is learned from)."""
        group = self.groups()
        order, counts = _sample(group, draw)
        bounds = np.searchsorted(group[order], np.arange(len(GROUPS) + 1)).tolist()
        # a sampled row counts for the rows left out: pooled sums keep their size, so the
        # ridge, the quantile prior and CHOICE_POINTS mean what they mean unsampled
        for_each = np.maximum(counts, 1) / np.maximum(np.diff(bounds), 1)
        weight = 1.0 / np.sqrt(np.maximum(np.nan_to_num(scale[order], nan=1.0), 1.0))
        weight *= for_each[group[order]]
        for pooled in (self.gram, self.cross, self.edge, self.edge_base, self.edge_points):
            pooled *= MEMORY
        truth = y[order]
        issued = ~np.isnan(steps[:, :, order, -1])  # [models, horizon, n]
        f = substitute(steps[:, :, order], axis=0)  # [models, horizon, n, values], group order
        for j in np.flatnonzero(~np.asarray(closed, bool)).tolist():
            means = f[:, j, :, MEAN]
            issued_here = ~np.isnan(means[0])  # a row with no forecast adds nothing
            means = np.where(issued_here, means, 0.0)
            fw, target = means * weight, np.where(issued_here, truth, 0.0)
            for g, (lo, hi) in enumerate(itertools.pairwise(bounds)):
                self.gram[g, j] += fw[:, lo:hi] @ means[:, lo:hi].T
                self.cross[g, j] += fw[:, lo:hi] @ target[lo:hi]
            if f.shape[-1] > 1:
                quantiles = f[:, j, :, P10:]
                self._learn_quantiles(j, quantiles, issued[:, j], truth, bounds, for_each)
        self._update_class(y)
        self._refit()

    def _learn_quantiles(
        self,
        j: int,
        f: np.ndarray,
        issued: np.ndarray,
        y: np.ndarray,
        bounds: list[int],
        for_each: np.ndarray,
    ) -> None:
        """One damped Newton step per group and level for horizon ``j + 1``, from
        the models' quantiles ``f [models, n, 3]`` (rows in group order, a model's NaN
        replaced by the others' mean) and the truths: on the group's pinball loss as the
        scores pool it, every point's loss as it is (each
        row's slope already grows with its size; weighting rows as the means do, by
        ``1 / sqrt(scale)``, scored a published MAE 0.659 on the full year against 0.655
        with the step before this one).
        The slope is the combined quantile's before it is put in order and calibrated:
        that is what the weights move, and the quantiles cross only where the models'
        disagree wildly. The same loss, against each model's own quantile over the rows that
        model forecast (``issued [models, n]``), is what ``choice`` reads. Each of group
        ``g``'s rows counts ``for_each[g]`` times (a sample's)."""
        here = ~np.isnan(f[0, :, 0])
        f, y, issued = f[:, here], y[here], issued[:, here]
        bounds = np.searchsorted(np.flatnonzero(here), bounds).tolist()
        for g, (lo, hi) in enumerate(itertools.pairwise(bounds)):
            if hi <= lo:
                continue
            w = self.quantile_weights[g, j]  # [3, models]
            fg = f[:, lo:hi]  # [models, rows, 3]
            combined = np.einsum("mrq,qm->rq", fg, w)
            self._score(g, j, combined, fg, issued[:, lo:hi], y[lo:hi], for_each[g])
            below = (y[lo:hi, None] < combined) - LEVELS  # the loss's slope in q
            slope = for_each[g] * np.einsum("rq,mrq->qm", below, fg)
            # how fast that slope turns with each weight: the truths' density at the quantile
            # (a normal with the models' mean p10-p90 width, at least MIN_WIDTH) times the
            # model's quantile squared
            width = np.maximum((fg[..., -1] - fg[..., 0]).mean(axis=0), MIN_WIDTH)
            curvature = for_each[g] * np.einsum("rq,mrq->qm", DENSITY / width[:, None], fg * fg)
            newton = slope / (w * curvature + QUANTILE_PRIOR)  # in log w: dw / w
            step = np.exp(np.clip(-QUANTILE_RATE * newton, -MAX_STEP, MAX_STEP))
            self.quantile_weights[g, j] = np.clip(w * step, MIN_WEIGHT, MAX_WEIGHT)

    def _score(
        self,
        g: int,
        j: int,
        combined: np.ndarray,
        own: np.ndarray,
        issued: np.ndarray,
        y: np.ndarray,
        count: float,
    ) -> None:
        """Add the pinball losses of group ``g``'s rows at horizon ``j + 1``, each counted
        ``count`` times, to ``edge``:
        the ``combined`` quantiles' ``[rows, 3]`` and each model's ``own [models, rows, 3]``,
        over the rows each model forecast (``issued [models, rows]``). Only their sums are
        needed: with ``d = q - y`` the loss is ``relu(d) - level * d``, summed in four passes
        over the models' quantiles."""
        mask = issued.astype(own.dtype)
        mine = mask @ pinball(combined, y)  # [models, 3]
        d = own - y[:, None]
        np.maximum(d, 0.0, out=d)
        theirs = np.einsum("mr,mrq->mq", mask, d)
        theirs -= LEVELS * (np.einsum("mr,mrq->mq", mask, own) - (mask @ y)[:, None])
        self.edge[g, j] += count * (mine - theirs).T
        self.edge_base[g, j] += count * mine.T
        self.edge_points[g, j] += count * mask.sum(axis=1)

    def choice(self) -> np.ndarray:
        """For each group, horizon and level ``[groups, horizon, 3]``, the model whose own
        quantile is published instead of the combined one (``NO_CHOICE``: none): the one
        whose pooled pinball loss over the rows it forecast, at least ``CHOICE_POINTS`` of
        them, is lowest, if it is lower than the combined quantile's there (a margin of 1%
        cost 0.2% of the published MAE and 0.1% of its pinball loss on the full year,
        docs/accuracy.md). The learned average cannot always reach a model's quantile (its
        weights are shared by every row of the group and move a bounded step a close); the
        pick follows the evidence of every series of the group, not one series' noise."""
        enough = (self.edge_base > 0) & (self.edge_points >= CHOICE_POINTS)[..., None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            gain = np.where(enough, self.edge / self.edge_base, 0.0)
        best = gain.argmax(axis=-1)
        wins = np.take_along_axis(gain, best[..., None], axis=-1)[..., 0] > 0
        return np.where(wins, best, NO_CHOICE)

    def _update_class(self, y: np.ndarray) -> None:
        sold = y > 0
        started = (self.sales > 0) | sold
        self.open[:] = CLASS_DECAY * self.open + started
        self.sales[:] = CLASS_DECAY * self.sales + sold
        self.size1[:] = CLASS_DECAY * self.size1 + np.where(sold, y, 0.0)
        self.size2[:] = CLASS_DECAY * self.size2 + np.where(sold, y * y, 0.0)

    def _refit(self) -> None:
        """Non-negative least squares on every group and horizon at once: projected gradient
        with Nesterov's momentum from the last weights, a few steps a close."""
        m = self.models
        ridge = RIDGE * np.trace(self.gram, axis1=-2, axis2=-1)[..., None] / m
        a = self.gram + ridge[..., None] * np.eye(m)
        b = self.cross + ridge / m
        step = 1.0 / np.maximum(np.linalg.eigvalsh(a)[..., -1], 1e-12)
        w = previous = self.weights
        for t in range(ITERATIONS):
            z = w + (t / (t + 3)) * (w - previous)
            grad = np.einsum("...ij,...j->...i", a, z) - b
            previous, w = w, np.maximum(z - step[..., None] * grad, 0.0)
        self.weights = np.where(ridge > 0, w, self.weights)

    def weigh(self, means: np.ndarray, own_mse: np.ndarray, evidence: np.ndarray) -> np.ndarray:
        """Each model's weight ``[n, horizon, models]`` in the combination of the models'
        ``means [models, n, horizon]`` (NaN: not ready): each row's group weights moved
        toward the inverse of ``own_mse [models, n, horizon]`` (NaN unknown) by its
        credibility ``evidence / (evidence + PRIOR)``, and a model not ready passing its
        weight on to the ready ones, as it stands in as their mean."""
        raw = np.moveaxis(means, 0, -1)
        group = self.weights[self.groups()]  # [n, horizon, models]
        # a model without known errors (not ready yet) has no say in the series' own weights
        mse = np.moveaxis(own_mse, 0, -1).astype(np.float64)
        inverse = 1.0 / np.maximum(mse, 1e-6)
        inverse[np.isnan(inverse)] = 0.0
        known = inverse.sum(axis=-1, keepdims=True)
        own = inverse / np.maximum(known, 1e-300)
        credibility = np.where(known > 0, (evidence / (evidence + PRIOR))[:, None, None], 0.0)
        total = group.sum(axis=-1, keepdims=True)
        w = (1 - credibility) * group + credibility * total * own
        ready = ~np.isnan(raw)
        passed_on = np.where(ready, 0.0, w).sum(axis=-1, keepdims=True)
        count = np.maximum(ready.sum(axis=-1, keepdims=True), 1)
        return np.where(ready, w + passed_on / count, 0.0)

    def state(self) -> State:
        return {**super().state(), **{name: getattr(self, name) for name in POOLED}}

    def load(self, state: State) -> None:
        """Continue from ``state()``. Pooled statistics the state lacks (a snapshot from
        before the quantile weights) or holds for other models or horizons (from before a
        model was added) start fresh; the series' own statistics carry over."""
        super().load(state)
        self._fresh_pooled()
        for name in POOLED:
            saved = np.asarray(state.get(name, ()), np.float64)
            if saved.shape == getattr(self, name).shape:
                setattr(self, name, saved.copy())
