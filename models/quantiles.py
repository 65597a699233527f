"""Quantiles for any point forecaster from its own errors, for all series at once.

Every forecast a model issues is remembered (``Issued``: one ring slot per issuing close, so
a close scores the forecasts of the ``horizon`` closes before it with a few array reads),
to within 0.4% (bfloat16: pending forecasts were most of a series' memory).
When the truth for a bucket arrives, the error ``y - mean`` at each horizon updates three
running quantiles per series and horizon (``Bands``), and p10/p50/p90 are the mean plus
them. A running quantile moves up by ``rate * spread * q`` after each truth above it and down
by ``rate * spread * (1 - q)`` after each one below, so it settles where a fraction ``q`` of
the errors fall below it, and keeps following when the errors drift: the same coverage
feedback as adaptive conformal inference (Gibbs and Candes 2021), in O(1) memory instead of
a window of errors. ``spread`` is the smoothed absolute deviation of the series' errors from
their running median, so the steps scale with the series. Until a horizon has ``MIN_ERRORS``
errors, a Poisson-like spread stands in (demand is a count).

Buckets expected to be closed get a forecast of zero with no spread. When the truth arrives
for them it is scored like any other point but never updates the quantiles: a surprise
opening says nothing about the model's everyday errors.

The mean square and mean cube of the errors per horizon are smoothed too: safety stock needs
them (streamer/alerts/reorder.py), since on lumpy demand the p10-p90 band is often [0, 0] while a
large order now and then empties the shelf.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.base import Columns, State
from models.blockfloat import EXP_MIN, decode, pack

__all__ = [
    "CALIBRATION_RATE",
    "EXPONENT",
    "HALF_NAN",
    "LEVELS",
    "MIN_ERRORS",
    "MOMENT_ALPHA",
    "RATE",
    "SPREAD_ALPHA",
    "WIDEN_RANGE",
    "Z90",
    "Bands",
    "Calibration",
    "Issued",
    "Moments",
    "Points",
    "Scored",
    "from_half",
    "in_order",
    "inverted_cdf_rank",
    "pinball",
    "summed_pinball",
    "to_half",
    "widen_band",
]

LEVELS = np.array([0.1, 0.5, 0.9])
MIN_ERRORS = 5
RATE = 0.3  # running quantile step, in units of the errors' smoothed deviation from the p50
SPREAD_ALPHA = 0.05  # weight of each error in that smoothed absolute error
MOMENT_ALPHA = 1 / 56  # weight of each error in the smoothed moments (about 8 weeks)
Z90 = 1.2815515655446004
# log-change of a band half's width per scored point, times (miss - 0.1). A close scores up to
# seven points of one truth, so a spike moved a width by up to 37% at 0.05: the noise cost
# 4% of the published pinball loss on the full year; 0.005 costs 0.2% (docs/accuracy.md)
CALIBRATION_RATE = 0.005
WIDEN_RANGE = (0.25, 8.0)
MEAN, P10, P50, P90 = range(4)  # the last axis of every steps array
HALF_NAN = 0x7FC0  # a quiet NaN as bfloat16: a ring slot with nothing issued
EXPONENT = "_exp"  # the suffix of a packed column's row exponents in ``state()``
Horizons = slice | np.ndarray  # which horizons an update covers: a slice where it can


def to_half(values: np.ndarray) -> np.ndarray:
    """``values`` as bfloat16 bits (``uint16``): the upper half of each float32, rounded to
    the nearest (ties to even): within 2**-8 (0.4%) of the value over float32's whole range,
    where float16 would overflow at 65,504 units.

    >>> from_half(to_half(np.array([0.0, 1.0, 2.37, 80995.0, np.nan]))).tolist()
    [0.0, 1.0, 2.375, 80896.0, nan]
    """
    bits = np.asarray(values, np.float32).view(np.uint32)
    half = ((bits + (0x7FFF + ((bits >> 16) & 1))) >> 16).astype(np.uint16)
    # a NaN with a full payload would carry into the sign bit
    return np.where(np.isnan(values), np.uint16(HALF_NAN), half)


def from_half(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bits back to floats (float64), exactly."""
    return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


@dataclass(frozen=True, slots=True)
class Points:
    """Forecasts meeting their truth at one close, ``k`` buckets after they were issued:
    ``steps[valid]`` are the scored rows' (mean, p10, p50, p90); ``closed`` when the step was
    forecast as a closed bucket."""

    k: int
    valid: np.ndarray
    steps: np.ndarray
    closed: bool


class Issued(Columns):
    """Forecasts issued and waiting for their truth. Step ``s`` of a forecast (the bucket
    ``s + 1`` after its issuing close) meets its truth ``s + 1`` closes later, so each step
    keeps a ring of its last ``s + 1`` issues: ``pending{s}[row, b % (s + 1)]`` is what the
    close of bucket ``b`` forecast for ``b + 1 + s``. That is 28 slots for a 7-step horizon
    where one ring of whole forecasts held 49, each (mean, p10, p50, p90) as bfloat16
    (``to_half``): 224 bytes a series, scored as issued to within 0.4%."""

    def __init__(self, horizon: int = 7) -> None:
        super().__init__()
        self.horizon = horizon
        for s in range(horizon):
            self.column(f"pending{s}", HALF_NAN, (s + 1, 4), np.uint16)

    def _ring(self, s: int) -> np.ndarray:
        ring: np.ndarray = getattr(self, f"pending{s}")
        return ring

    def at(self, bucket: int, k: int) -> np.ndarray:
        """(mean, p10, p50, p90) ``[n, 4]`` forecast ``k`` buckets before ``bucket`` for it."""
        return from_half(self._ring(k - 1)[:, (bucket - k) % k, :])

    def settle(self, bucket: int, is_open: bool, closed_ahead: np.ndarray) -> list[Points]:
        """What closing ``bucket`` scores: nothing when the shop did not trade.
        ``closed_ahead[slot, step]`` says which steps the close in each slot (``b % horizon``)
        forecast as closed."""
        if not is_open:
            return []
        out = []
        for k in range(1, self.horizon + 1):
            steps = self.at(bucket, k)
            valid = ~np.isnan(steps[:, MEAN])
            if valid.any():
                closed = bool(closed_ahead[(bucket - k) % self.horizon, k - 1])
                out.append(Points(k, valid, steps, closed))
        return out

    def issue(self, bucket: int, steps: np.ndarray) -> None:
        """Remember ``steps [n, horizon, 4]`` (NaN rows: nothing issued) as ``bucket``'s."""
        half = to_half(steps)  # once for all steps: a call per step was a twentieth of a bank
        for s in range(self.horizon):
            self._ring(s)[:, bucket % (s + 1)] = half[:, s]


class Calibration(Columns):
    """How much to widen each half of the published band, per series: adaptive conformal
    inference (Gibbs and Candes 2021) on the band's width, from the published forecast's
    misses as issued (``widen_band``). A half whose tail is missed more often than 10%
    widens, one missed less often narrows. The running quantiles alone lag a series whose
    errors change: on the 500 largest series the published band covered 73% instead of 80%
    without it. A model's own quantile that the combination publishes is not widened
    (``widen_band``'s ``keep``), but its misses still teach the factor: the factor is one a
    series for all horizons, and is measured on the band as published."""

    def __init__(self) -> None:
        super().__init__()
        self.column("widen", 1.0, (2,), np.float32)  # below and above the p50

    def learn(self, points: list[Points], y: np.ndarray) -> None:
        # every horizon's misses at once, then the factors in the horizons' order: the clip
        # after each makes the order matter
        scored = [p for p in points if not p.closed]
        if not scored:
            return
        valid, p10, p90 = _by_horizon(scored, P10, P90)
        missed = np.stack([y[:, None] < p10, y[:, None] > p90], -1)
        factors = np.where(valid[..., None], np.exp(CALIBRATION_RATE * (missed - LEVELS[0])), 1.0)
        for h in range(factors.shape[1]):  # an unscored row's factor of 1 keeps it (in range)
            self.widen = np.clip(self.widen * factors[:, h], *WIDEN_RANGE).astype(np.float32)


def _by_horizon(points: list[Points], *values: int) -> list[np.ndarray]:
    """Which rows ``points`` score ``[n, len(points)]``, then each of ``values`` (``MEAN``,
    ``P10`` ...) issued for them (NaN where none was), side by side in the points' order."""
    valid = np.stack([p.valid for p in points], 1)
    return [valid, *(np.stack([p.steps[:, v] for p in points], 1) for v in values)]


def _select(where: np.ndarray, new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """``np.where(where, new, old)``, or the one side it would take whole: after a series'
    first weeks every row is scored and none is new, and the selections were a quarter of
    the updates. The result may need broadcasting to ``old``'s shape, as assigning does.

    >>> _select(np.array([True, True]), np.array([1.0]), np.array([0.0, 0.0])).tolist()
    [1.0]
    """
    if where.all():
        return new
    if not where.any():
        return old
    return np.where(where, new, old)


def _horizons(h: list[int]) -> Horizons:
    """The horizons ``h`` as an index: a slice where they follow each other (all of them, but
    for the first closes and the rows of a closed day), which reads a view, not a copy."""
    if h == list(range(h[0], h[-1] + 1)):
        return slice(h[0], h[-1] + 1)
    return np.array(h)


class Scored(Issued):
    """Issued forecasts and the smoothed mean square of their errors per horizon: how far a
    model's mean can be trusted (``models.combination``). A model that forecasts its own
    quantiles needs no more (``steps``); the others keep ``Bands``.

    A million series hold six of these, so the moments are block floating point between
    closes (``models.blockfloat``: int16 codes and an exponent a row, 15 bytes where float32
    took 28), unpacked for a close's updates and packed once after them."""

    def __init__(self, horizon: int = 7) -> None:
        super().__init__(horizon)
        self._packs: dict[str, bool] = {}  # the packed columns, True where bfloat16
        self._work: dict[str, np.ndarray] = {}  # the packed columns, unpacked during learn
        self.column("errors", 0, (horizon,), np.int8)  # counted up to MIN_ERRORS
        self._packed("m2", (horizon,))

    def _packed(self, name: str, shape: tuple[int, ...], half: bool = False) -> None:
        """A column kept as codes ``name`` and a row exponent ``name + EXPONENT``, or as bfloat16
        (``half``: within 0.4%, for a scale)."""
        if half:
            self.column(name, HALF_NAN, shape, np.uint16)
        else:
            self.column(name, 0, shape, np.int16)
            self.column(name + EXPONENT, EXP_MIN, (), np.int8)
        self._packs[name] = half

    def unpacked(self, name: str) -> np.ndarray:
        """The values of the packed column ``name``."""
        if self._packs[name]:
            return from_half(getattr(self, name))
        return decode(getattr(self, name), getattr(self, name + EXPONENT))

    def _pack(self, name: str, values: np.ndarray) -> State:
        """The packed column ``name`` holding ``values``, as ``state()`` names its arrays."""
        if self._packs[name]:
            return {name: to_half(values)}
        codes, exp = pack(values)
        return {name: codes, name + EXPONENT: exp}

    def learn(self, points: list[Points], y: np.ndarray) -> None:
        """Update from the points ``settle`` returned for these forecasts (one a horizon)."""
        if not points:
            return
        self._work = {name: self.unpacked(name) for name in self._packs}
        # a surprise opening says nothing of the model's everyday errors
        scored = [p for p in points if not p.closed]
        if scored:
            # all horizons in one pass of each update: a pass per horizon was seven times the
            # numpy calls, which are most of a close of a thousand series
            valid, means = _by_horizon(scored, MEAN)
            e = np.where(valid, y[:, None] - means, 0.0)
            h = _horizons([p.k - 1 for p in scored])
            errors = self.errors[:, h]
            self._track(h, valid, e, valid & (errors == 0))
            self.errors[:, h] = errors + (valid & (errors < MIN_ERRORS))
        for name, values in self._work.items():
            for key, array in self._pack(name, values).items():
                setattr(self, key, array)
        self._work = {}  # not views of them: a view keeps the whole array alive

    def _update(self, name: str, h: Horizons, valid: np.ndarray, new: np.ndarray) -> None:
        """The working column ``name`` at horizons ``h``: ``new`` where ``valid``."""
        self._work[name][:, h] = _select(valid, new, self._work[name][:, h])

    def _track(self, h: Horizons, valid: np.ndarray, e: np.ndarray, first: np.ndarray) -> None:
        """Errors ``e [n, len(h)]`` at the horizons ``h``, where ``valid``; ``first`` where
        a row's horizon had none before."""
        m2, e2 = self._work["m2"][:, h], e * e
        self._update("m2", h, valid, _select(first, e2, m2 + MOMENT_ALPHA * (e2 - m2)))

    def load(self, state: State) -> None:
        """Continue from ``state()``; a snapshot from before the codes kept float32."""
        for name in self._packs:
            if np.asarray(state[name]).dtype.kind == "f":
                state = {**state, **self._pack(name, np.asarray(state[name], np.float32))}
        super().load(state)

    def mean_square(self) -> np.ndarray:
        """The smoothed mean square of the errors ``[n, horizon]``."""
        return self.unpacked("m2")

    def known(self) -> np.ndarray:
        """Where the moments are known ``[n, horizon]``: after ``MIN_ERRORS`` errors."""
        return self.errors >= MIN_ERRORS

    def steps(self, steps: np.ndarray, ready: np.ndarray, closed: np.ndarray) -> np.ndarray:
        """A model's own (mean, p10, p50, p90) ``[n, horizon, 4]`` as issued: at least 0,
        quantiles in order, zeros for the steps ``closed`` says the shop will not trade, NaN
        for rows not ready.

        >>> own = np.array([[[2.5, 3.0, 1.0, 7.0]]])
        >>> Scored(horizon=1).steps(own, np.array([True]), np.array([False])).tolist()
        [[[2.5, 1.0, 3.0, 7.0]]]
        """
        if not ready.any():  # such as an LSTM not trained yet
            return np.full(steps.shape, np.nan)
        out = np.maximum(np.asarray(steps, np.float64), 0.0)
        in_order(out[..., P10:].copy(), out[..., P10:])
        out[:, closed, :] = 0.0
        out[~ready] = np.nan
        return out


class Moments(Scored):
    """Issued forecasts and the smoothed mean square and cube of their errors per horizon:
    what safety stock needs. The published combination keeps these; its band comes from
    the models' (``models.combination.combine``)."""

    def __init__(self, horizon: int = 7) -> None:
        super().__init__(horizon)
        self._packed("m3", (horizon,))

    def _track(self, h: Horizons, valid: np.ndarray, e: np.ndarray, first: np.ndarray) -> None:
        m3 = self._work["m3"][:, h]
        e3 = e * e * e  # not e**3: a float power is a libm call per element, a tenth of a close
        self._update("m3", h, valid, _select(first, e3, m3 + MOMENT_ALPHA * (e3 - m3)))
        super()._track(h, valid, e, first)

    def moments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Smoothed mean square and cube of the errors ``[n, horizon]``, and where known."""
        return self.mean_square(), self.unpacked("m3"), self.known()


class Bands(Scored):
    """One model's issued forecasts, running error quantiles and moments per horizon.

    A new series starts with a Poisson-like band around its mean; once its errors are known
    the band follows them. Here the model keeps forecasting 4 while 5, 6 and 7 sell:

    >>> bands = Bands(horizon=1)
    >>> bands.take(np.array([-1]))  # one new series
    >>> mean, ready, closed = np.array([[4.0]]), np.array([True]), np.array([False])
    >>> bands.steps(mean, ready, closed).round(2).tolist()  # (mean, p10, p50, p90)
    [[[4.0, 1.44, 4.0, 6.56]]]
    >>> for b in range(30):
    ...     bands.issue(b, bands.steps(mean, ready, closed))
    ...     points = bands.settle(b + 1, True, np.zeros((1, 1), bool))
    ...     bands.learn(points, np.array([5.0 + b % 3]))
    >>> bands.steps(mean, ready, closed).round(1).tolist()  # the band moved onto the truths
    [[[4.0, 5.0, 6.0, 7.1]]]
    """

    def __init__(self, horizon: int = 7) -> None:
        super().__init__(horizon)
        self._packed("q", (horizon, 3))  # the quantiles of a row, all horizons
        self._packed("spread", (), half=True)  # a scale for the steps: 0.4% is plenty

    def quantiles(self) -> np.ndarray:
        """The running quantiles of the errors ``[n, horizon, 3]``."""
        return self.unpacked("q")

    def _track(self, h: Horizons, valid: np.ndarray, e: np.ndarray, first: np.ndarray) -> None:
        q = self._work["q"][:, h, :]
        dev = np.abs(e - q[..., 1])
        # one spread a row, smoothed over the horizons in their order
        spread, step = self._work["spread"], np.empty_like(e)
        for i in range(e.shape[1]):
            known = np.where(np.isnan(spread), dev[:, i], spread)
            spread = _select(valid[:, i], known + SPREAD_ALPHA * (dev[:, i] - known), spread)
            step[:, i] = RATE * np.fmax(spread, 0.05)  # fmax: a NaN spread (none yet) steps 0.05
        moved = q + step[..., None] * (LEVELS - (e[..., None] < q))
        self._update("q", h, valid[..., None], _select(first[..., None], e[..., None], moved))
        self._work["spread"] = spread
        super()._track(h, valid, e, first)

    def steps(self, means: np.ndarray, ready: np.ndarray, closed: np.ndarray) -> np.ndarray:
        """(mean, p10, p50, p90) ``[n, horizon, 4]`` for ready rows (NaN elsewhere), the
        band of their errors around ``means [n, horizon]``; zeros for the steps ``closed``
        says the shop will not trade."""
        if not ready.any():  # a model with nothing to say yet
            return np.full((*means.shape, 4), np.nan)
        spread = Z90 * np.sqrt(np.maximum(means, 1.0))
        poisson = np.stack([-spread, np.zeros_like(means), spread], axis=-1)
        offsets = np.where(self.known()[..., None], self.quantiles(), poisson)
        out = np.empty((*means.shape, 4))
        out[..., MEAN] = means
        in_order(np.maximum(means[..., None] + offsets, 0.0), out[..., P10:])
        out[:, closed, :] = 0.0
        out[~ready] = np.nan
        return out


def inverted_cdf_rank(levels: np.ndarray, n: np.ndarray) -> np.ndarray:
    """The position ``[len(n), len(levels)]``, in a sorted sample of ``n`` values, of each
    level's quantile by the inverted CDF (numpy's ``method="inverted_cdf"``): the smallest
    ``k`` with ``(k + 1) / n >= level``, so a value of the sample, a count that sold. -1 for an
    empty sample.

    >>> inverted_cdf_rank(LEVELS, np.array([10, 3, 0])).tolist()
    [[0, 4, 8], [0, 1, 2], [-1, -1, -1]]
    """
    # a level times a count can land a hair above a whole number in floating point: that
    # must not take the next value
    return np.ceil(np.multiply.outer(n, levels) - 1e-9).astype(np.int64) - 1


def in_order(quantiles: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``quantiles [..., 3]`` sorted along the last axis into ``out``, by a min/max network:
    np.sort along an axis of three was a tenth of a close.

    >>> in_order(np.array([[3.0, 1.0, 2.0]]), np.empty((1, 3))).tolist()
    [[1.0, 2.0, 3.0]]
    """
    a, b, c = np.moveaxis(quantiles, -1, 0)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    np.minimum(lo, c, out=out[..., 0])
    np.maximum(lo, np.minimum(hi, c), out=out[..., 1])
    np.maximum(hi, c, out=out[..., 2])
    return out


def pinball(quantiles: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The pinball loss of ``quantiles [..., 3]`` (p10, p50, p90) for the truths ``y``
    (``quantiles`` without its last axis, or broadcast to it).

    >>> pinball(np.array([[0.0, 2.0, 4.0]]), np.array([3.0])).tolist()
    [[0.30000000000000004, 0.5, 0.09999999999999998]]
    """
    e = np.asarray(y)[..., None] - quantiles
    return np.maximum(LEVELS * e, (LEVELS - 1) * e)


def summed_pinball(p10: np.ndarray, p50: np.ndarray, p90: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The pinball losses of p10, p50 and p90 for the truths ``y``, summed, elementwise over
    arrays of one shape: ``sum(level * (y - q)) + sum(max(q - y, 0))``. On ``[models, rows]``
    arrays a quarter of the time of ``pinball`` over a last axis of three.

    >>> summed_pinball(np.array([0.0]), np.array([2.0]), np.array([4.0]), np.array([3.0]))
    array([0.9])
    """
    loss = LEVELS.sum() * y - LEVELS[0] * p10 - LEVELS[1] * p50 - LEVELS[2] * p90
    for q in (p10, p50, p90):
        loss = loss + np.maximum(q - y, 0.0)
    return loss


def widen_band(steps: np.ndarray, widen: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """``steps [n, horizon, 4]`` with each half of the band (p50 to p10, p50 to p90) times
    the row's factor in ``widen [n, 2]`` (``Calibration``), p10 no lower than 0; the
    quantiles ``keep [n, horizon, 3]`` marks (p10, p50, p90) stay as they are.

    >>> s = np.array([[[3.0, 2.0, 3.0, 5.0]]])
    >>> widen_band(s, np.array([[3.0, 0.5]])).tolist()
    [[[3.0, 0.0, 3.0, 4.0]]]
    >>> widen_band(s, np.array([[3.0, 0.5]]), np.array([[[True, False, False]]])).tolist()
    [[[3.0, 2.0, 3.0, 4.0]]]
    """
    out = steps.copy()
    p50 = steps[..., P50]
    factor = widen.astype(np.float64)
    out[..., P10] = np.maximum(p50 - (p50 - steps[..., P10]) * factor[:, None, 0], 0.0)
    out[..., P90] = p50 + (steps[..., P90] - p50) * factor[:, None, 1]
    if keep is not None:
        np.copyto(out[..., P10:], steps[..., P10:], where=keep)
    return out
