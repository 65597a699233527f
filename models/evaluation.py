"""Prequential scoring: forecasts scored against the demand that arrived after them.

``score`` re-scores forecast messages read back from the topic against the input, independently
of the worker; ``Prequential`` adds up the outcomes the worker (or the benchmark) settles at
each close, for every model.

A forecast issued when bucket ``b`` closed covers ``b+1 .. b+H``; a target counts once its
bucket has closed for that series (the series got a later forecast). Metrics per model, pooled
over every (series, issue bucket, horizon) point:

* MAE of the p50 (the median minimises absolute error), RMSE of the mean; pinball loss
  averaged over p10/p50/p90; p10-p90 coverage;
* MASE: per series, MAE divided by the in-sample MAE of the weekly seasonal naive one-step
  forecast over the series' history, then averaged over series with a non-zero scale;
* rel_mae: MAE divided by seasonal naive's MAE on the same points (below 1 beats it), and
  likewise RMSE and pinball; and the three against a forecast of zeros, which on
  intermittent demand often beats seasonal naive on MAE alone. A point forecast's pinball
  loss averaged over p10/p50/p90 is half its absolute error.

Every message counts for its model and for ``published`` (the topic carries each series'
published forecast at each bucket, ``combined``), except a SKU's rollup over its locations
(``sku@*``), which counts as ``rollup`` only (``truth`` must hold its demand, the sum over its
locations). Buckets in ``closed`` (the shop did not trade) have no truth and are never scored.

>>> fc = [{"forecast_id": "a@x|0|m@1",
...        "horizon": [{"mean": 2.0, "p10": 1.0, "p50": 2.0, "p90": 3.0}]},
...       {"forecast_id": "a@x|1|m@1", "horizon": []}]
>>> score(fc, {("a@x", 1): 4.0}, season=1)["m"]["mae"]
2.0
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence, Set
from pathlib import Path

import numpy as np
import orjson

from models.bank import PUBLISHED, SEASONAL_NAIVE, Settled
from models.base import SEASON
from models.forecast_table import ForecastTable, parse_forecast_id
from models.quantiles import Points, summed_pinball
from models.rollup import ROLLUP

__all__ = ["JsonLines", "Prequential", "parse_forecast_id", "references", "score"]


# rows scored at a time: a partition of 125,000 series and ten models would otherwise hold
# ~100 MB of per-point terms
SCORED_ROWS = 16_384


def _chunks(n: int) -> Iterator[slice]:
    return (slice(lo, lo + SCORED_ROWS) for lo in range(0, n, SCORED_ROWS))


def _per_scale(scale: np.ndarray | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Whether each of ``n`` rows has a MASE scale (None, NaN or 0: unknown), and 1 / scale
    where it has, 0 elsewhere, as floats: ``np.where`` over None made an object array, and the
    product of the terms with it Python arithmetic per point (4 ms a call on a rollup's 3,000
    SKUs, with the interpreter lock held).

    >>> _per_scale(None, 2)[1].dtype, _per_scale(np.array([2.0, np.nan]), 2)[1].tolist()
    (dtype('float64'), [0.5, 0.0])
    """
    if scale is None:
        return np.zeros(n, bool), np.zeros(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = scale > 0
        return scaled, np.where(scaled, 1 / np.where(scaled, scale, 1.0), 0.0)


def _point_terms(valid: np.ndarray, steps: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``[7, models, n]``: each point's absolute error of the p50 and of the mean, squared
    error of the mean, pinball loss summed over p10/p50/p90, whether p10 <= y <= p90, y < p10
    and y > p90; zero where ``valid [models, n]`` is false (``steps`` there may be NaN)."""
    mean, p10, p50, p90 = np.where(valid, np.moveaxis(steps, -1, 0), 0.0)  # each contiguous
    terms = np.empty((7, *valid.shape))
    off = y - mean
    np.abs(y - p50, out=terms[0])
    np.abs(off, out=terms[1])
    np.multiply(off, off, out=terms[2])
    terms[3] = summed_pinball(p10, p50, p90, y)
    terms[4] = (p10 <= y) & (y <= p90)
    terms[5] = y < p10
    terms[6] = y > p90
    terms *= valid
    return terms


def score(
    forecasts: ForecastTable | Iterable[Mapping[str, object]],
    truth: Mapping[tuple[str, int], float],
    season: int = SEASON,
    closed: Set[int] = frozenset(),
) -> dict[str, dict[str, float]]:
    """Metrics per model over every scored point (see the module's docstring).

    ``forecasts`` is a ``ForecastTable`` or messages to read into one. Of a redelivered
    forecast id the first copy counts. The reference is the classic seasonal naive computed
    from ``truth``: the same slot a season earlier, skipping closed buckets, as known when the
    forecast was issued.
    """
    table = forecasts if isinstance(forecasts, ForecastTable) else ForecastTable.read(forecasts)
    if not len(table):
        return {}
    grid = _Grid(table, truth, season, closed)
    sums = _Sums(table)
    for k in range(table.steps.shape[1]):
        sums.add(grid, k)
    return sums.metrics(grid.scale())


def references(
    abs_err: float, sq_err: float, pinball: float, ref_abs: float, ref_sq: float, name: str
) -> dict[str, float]:
    """MAE, RMSE and pinball relative to a point forecast's on the same points (below 1 beats
    it), from sums of the errors and of the reference's; ``pinball`` is summed as the mean
    over the three quantiles, which for a point forecast is half its absolute error.

    >>> references(2.0, 4.0, 1.0, 4.0, 16.0, "zeros")
    {'rel_mae_vs_zeros': 0.5, 'rel_rmse_vs_zeros': 0.5, 'rel_pinball_vs_zeros': 0.5}
    """

    def ratio(a: float, b: float) -> float:
        return a / b if b else float("nan")

    return {
        f"rel_mae_vs_{name}": ratio(abs_err, ref_abs),
        f"rel_rmse_vs_{name}": math.sqrt(ratio(sq_err, ref_sq)) if ref_sq else float("nan"),
        f"rel_pinball_vs_{name}": ratio(pinball, ref_abs / 2),
    }


class _Grid:
    """Truth as a dense ``[series, bucket]`` array over the span the scoring reads, the
    closed buckets as a mask over it, and each series' first and last issue bucket."""

    def __init__(
        self,
        table: ForecastTable,
        truth: Mapping[tuple[str, int], float],
        season: int,
        closed: Set[int],
    ) -> None:
        self.table, self.season = table, season
        n = len(table.series)
        self.first = np.full(n, np.iinfo(np.int64).max, np.int64)
        self.last = np.full(n, np.iinfo(np.int64).min, np.int64)
        np.minimum.at(self.first, table.sid, table.issued)
        np.maximum.at(self.last, table.sid, table.issued)
        self.lo = int(table.issued.min()) - season
        hi = int(table.issued.max()) + table.steps.shape[1] + 1
        self.y = np.zeros((n, hi - self.lo))
        row = {s: i for i, s in enumerate(table.series)}
        for (series, b), value in truth.items():
            i = row.get(series)
            if i is not None and self.lo <= b < hi:
                self.y[i, b - self.lo] = value
        self.closed = np.zeros(hi - self.lo, bool)
        self.closed[[b - self.lo for b in closed if self.lo <= b < hi]] = True

    def reference(self, rows: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Seasonal naive's forecast of ``target`` as known at each row's issue (NaN: the
        series had no season of history then)."""
        issued, s = self.table.issued[rows], self.table.sid[rows]
        b = target - self.season
        while True:  # back a season while the slot is after the issue or closed
            inside = b >= self.lo
            back = (b > issued) | (inside & self.closed[np.where(inside, b - self.lo, 0)])
            if not back.any():
                break
            b = np.where(back, b - self.season, b)
        known = b >= self.first[s] - self.season
        return np.where(known, self.y[s, np.clip(b - self.lo, 0, None)], np.nan)

    def scale(self) -> np.ndarray:
        """Per series, the in-sample MAE of the weekly seasonal naive one-step forecast from
        one season after its first close (no difference reaches before it) to its last."""
        m = self.season
        valid = ~self.closed[m:] & ~self.closed[:-m]
        diffs = np.abs(self.y[:, m:] - self.y[:, :-m]) * valid
        sums = np.concatenate([np.zeros((len(diffs), 1)), np.cumsum(diffs, axis=1)], axis=1)
        counts = np.concatenate([[0], np.cumsum(valid)])
        # column j is bucket lo + m + j; a series' range [first + m, last] may be empty
        start = np.clip(self.first - self.lo, 0, len(counts) - 1)
        end = np.clip(self.last - self.lo - m + 1, start, len(counts) - 1)
        rows = np.arange(len(diffs))
        n = counts[end] - counts[start]
        total = sums[rows, end] - sums[rows, start]
        return np.where(n > 0, total / np.maximum(n, 1), 0.0)


class _Sums:
    """Running sums per model (and per model and series, for MASE), step by step."""

    FIELDS = ("n", "abs", "sq", "pinball", "covered", "below", "above", "common_abs",
              "common_ref", "common_sq", "common_ref_sq", "common_pinball", "y_abs",
              "y_sq")  # fmt: skip

    def __init__(self, table: ForecastTable) -> None:
        self.table = table
        self.names = [*table.models, PUBLISHED]
        m, n = len(self.names), len(table.series)
        self.totals = np.zeros((m, len(self.FIELDS)))
        self.series_abs, self.series_n = np.zeros((m, n)), np.zeros((m, n))
        rollup = table.model_index(ROLLUP)
        self.published = table.model != rollup  # every message but rollups was published

    def add(self, grid: _Grid, k: int) -> None:
        t = self.table
        target = t.issued + k + 1
        # a target counts once its bucket has closed for the series (it got a later forecast)
        valid = t.first_copy & (k < t.lengths) & (target <= grid.last[t.sid])
        valid &= ~grid.closed[np.clip(target - grid.lo, 0, len(grid.closed) - 1)]
        rows = np.flatnonzero(valid)
        s, target = t.sid[rows], target[rows]
        y = grid.y[s, target - grid.lo]
        mean, p10, p50, p90 = t.steps[rows, k].astype(np.float64).T
        ref = grid.reference(rows, target)
        common = ~np.isnan(ref)
        absolute, squared = np.abs(y - p50), (y - mean) ** 2
        pinball, ref_abs = summed_pinball(p10, p50, p90, y) / 3, np.abs(y - np.nan_to_num(ref))
        columns = (np.ones_like(y), absolute, squared, pinball, (p10 <= y) & (y <= p90),
                   y < p10, y > p90, *(np.where(common, v, 0.0) for v in (
                       absolute, ref_abs, squared, ref_abs**2, pinball)),
                   np.abs(y), y**2)  # fmt: skip
        own = t.model[rows].astype(np.int64)
        published = self.published[rows]
        for j, column in enumerate(columns):
            self.totals[:, j] += self._per_model(own, published, np.asarray(column, np.float64))
        n = len(t.series)
        cells = own * n + s  # (model, series) pairs, published apart
        for per_series, weights in ((self.series_abs, absolute), (self.series_n, None)):
            per_series[:-1] += np.bincount(cells, weights, len(t.models) * n).reshape(-1, n)
            mine = None if weights is None else weights[published]
            per_series[-1] += np.bincount(s[published], mine, n)

    def _per_model(self, own: np.ndarray, published: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The sum of ``weights`` over each model's points, then over the published ones."""
        by_model = np.bincount(own, weights, len(self.table.models))
        return np.append(by_model, weights[published].sum())

    def metrics(self, scale: np.ndarray) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for i in sorted(range(len(self.names)), key=self.names.__getitem__):
            t = dict(zip(self.FIELDS, self.totals[i].tolist(), strict=True))
            if not t["n"]:
                continue
            counted = (self.series_n[i] > 0) & (scale > 0)
            ratios = self.series_abs[i][counted] / self.series_n[i][counted] / scale[counted]
            n = t["n"]
            out[self.names[i]] = {
                "points": int(n),
                "mae": t["abs"] / n,
                "rmse": math.sqrt(t["sq"] / n),
                "mase": float(ratios.mean()) if len(ratios) else float("nan"),
                "pinball": t["pinball"] / n,
                "coverage_p10_p90": t["covered"] / n,
                "below_p10": t["below"] / n,
                "above_p90": t["above"] / n,
                **references(t["abs"], t["sq"], t["pinball"], t["y_abs"], t["y_sq"], "zeros"),
                **references(t["common_abs"], t["common_sq"], t["common_pinball"],
                             t["common_ref"], t["common_ref_sq"], SEASONAL_NAIVE),
            }  # fmt: skip
        return out


class JsonLines:
    """A re-iterable view of a JSON-lines file: each pass reads it again from disk."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __iter__(self) -> Iterator[dict[str, object]]:
        with self.path.open("rb") as f:
            for line in f:
                # orjson: a year of forecasts is millions of lines
                yield orjson.loads(line)


class Prequential:
    """Running sums of prequential errors per (model, horizon), from scored points.

    The sums are plain floats keyed ``"model|k|field"``, so a worker can add them to a Redis
    hash and any number of partitions or processes can be merged by adding. MAE scores the
    p50 (the median minimises absolute error); RMSE scores the mean. MASE divides each
    absolute error by the series' in-sample seasonal naive MAE known when it was scored.
    ``rel_mae_vs_seasonal_naive`` compares with the classic seasonal naive (its point
    forecast, no quantile shift) on the same points.

    >>> p = Prequential()
    >>> p.add("m", 1, np.array([4.0]), np.array([[3.0, 1.0, 2.0, 5.0]]), np.array([2.0]),
    ...       np.array([4.0]))
    >>> s = p.summary()["m"]
    >>> s["mae"], s["mase"], s["rel_mae_vs_seasonal_naive"], s["coverage_p10_p90"]
    (2.0, 1.0, 0.5, 1.0)
    """

    FIELDS = ("n", "abs", "abs_mean", "sq", "pinball", "covered", "below", "above", "scaled",
              "scaled_n", "ref", "ref_abs", "ref_sq", "ref_err_sq", "ref_pinball", "y_abs",
              "y_sq")  # fmt: skip

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)

    def add_shares(self, names: Sequence[str], shares: np.ndarray) -> None:
        """Count the published forecasts whose models' weights are ``shares [n, models]``,
        and add up each model's (horizon 0 holds these)."""
        if not len(shares):
            return
        self.sums[f"{PUBLISHED}|0|forecasts"] += len(shares)
        for name, total in zip(names, shares.sum(axis=0).tolist(), strict=True):
            if total:  # a model never ready (an LSTM not trained yet) has no weight to show
                self.sums[f"{name}|0|weight"] += total

    def add(
        self,
        model: str,
        k: int,
        y: np.ndarray,
        steps: np.ndarray,
        scale: np.ndarray | None = None,
        reference: np.ndarray | None = None,
    ) -> None:
        """Points of ``model`` scored ``k`` buckets ahead: truths ``y``, forecasts ``steps``
        ``[n, 4]`` (mean, p10, p50, p90), MASE scales and seasonal naive's absolute errors
        (NaN or 0: unknown)."""
        valid = np.ones((1, len(y)), bool)
        self._add_models([model], k, valid, np.asarray(steps)[None], y, scale, reference)

    def add_settled(self, settled: Settled) -> None:
        """Every point a bank's close scored (a rollup has its own ``models.rollup.settle``),
        every model at once for each ``k``: a close scores dozens of (model, k) pairs, and a
        dozen numpy passes for each pair took 15% of a close's thread (docs/benchmark.md)."""
        by_k: dict[int, list[tuple[str, Points]]] = defaultdict(list)
        for model, points in settled.points.items():
            for p in points:
                by_k[p.k].append((model, p))
        for k, scored in by_k.items():
            valid = np.stack([p.valid for _, p in scored])
            steps = np.stack([p.steps for _, p in scored])
            models = [model for model, _ in scored]
            ref = settled.reference.get(k)
            self._add_models(models, k, valid, steps, settled.y, settled.scale, ref)

    def _add_models(
        self,
        models: list[str],
        k: int,
        valid: np.ndarray,
        steps: np.ndarray,
        y: np.ndarray,
        scale: np.ndarray | None,
        reference: np.ndarray | None,
    ) -> None:
        """The sums of the points ``valid [models, n]`` of forecasts ``steps [models, n, 4]``
        against the rows' truths ``y``, scales and reference (as ``add`` takes them): every
        model's per-point terms at once, summed over the rows by two matrix products."""
        scored = valid.any(axis=0)  # a row no model scored may have no truth (NaN)
        if not scored.all():
            valid, steps, y = valid[:, scored], steps[:, scored], y[scored]
            scale = None if scale is None else scale[scored]
            reference = None if reference is None else reference[scored]
        if not valid.size:
            return
        y = np.asarray(y, np.float64)
        scaled, per_scale = _per_scale(scale, len(y))
        if reference is None:
            known, ref = np.zeros(len(y), bool), np.zeros(len(y))
        else:
            known = ~np.isnan(reference)
            ref = np.where(known, reference, 0.0)
        # [terms, models, 3]: each term summed over the rows, over the scaled rows divided by
        # their scale, and over the rows with a reference
        weights = np.stack([np.ones_like(y), per_scale, known], axis=1)
        by_row = sum(
            _point_terms(valid[:, rows], steps[:, rows], y[rows]) @ weights[rows]
            for rows in _chunks(len(y))
        )
        own = np.stack([np.ones_like(y), np.abs(y), y * y, scaled, known, ref, ref**2])
        own = valid.astype(np.float64) @ own.T  # [models, sums of the rows' own values]
        self._record(models, k, by_row.transpose(1, 0, 2).tolist(), own.tolist())

    def _record(
        self, models: list[str], k: int, by_row: list[list[list[float]]], own: list[list[float]]
    ) -> None:
        """Add one ``_add_models``'s sums, leaving out the scaled sums of a model with no
        scale and the reference sums of one with no reference (unknown, not zero)."""
        sums = self.sums
        for model, terms, (n, y_abs, y_sq, scaled_n, referenced, ref, ref_sq) in zip(
            models, by_row, own, strict=True
        ):
            if not n:
                continue
            key = f"{model}|{k}|"
            error, mean_error, squared, pin, covered, below, above = terms
            fields = {"n": n, "abs": error[0], "abs_mean": mean_error[0], "sq": squared[0],
                      "pinball": pin[0], "y_abs": y_abs, "y_sq": y_sq, "covered": covered[0],
                      "below": below[0], "above": above[0]}  # fmt: skip
            if scaled_n:
                fields |= {"scaled": error[1], "scaled_n": scaled_n}
            if referenced:
                fields |= {"ref": ref, "ref_abs": error[2], "ref_sq": ref_sq,
                           "ref_err_sq": squared[2], "ref_pinball": pin[2]}  # fmt: skip
            for field, v in fields.items():
                sums[key + field] += v

    def merge(self, sums: Mapping[str, float]) -> None:
        for k, v in sums.items():
            self.sums[k] += v

    def summary(self) -> dict[str, dict[str, object]]:
        """Metrics per model over all horizons, with a ``horizons`` list (k = 1, 2, ...);
        ``published`` has the count of its ``forecasts``, and each model of the bank its mean
        ``weight`` in them."""
        grouped: dict[str, dict[int, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
        for key, v in self.sums.items():
            model, k, field = key.rsplit("|", 2)
            grouped[model][int(k)][field] = v
        forecasts = grouped.get(PUBLISHED, {}).get(0, {}).get("forecasts", 0.0)
        out: dict[str, dict[str, object]] = {}
        for model, by_k in sorted(grouped.items()):
            # sums from before the combination also hold the pick's "wins": left out
            counts = {f: v / forecasts if f == "weight" else int(v)
                      for f, v in by_k.pop(0, {}).items()
                      if forecasts and f in ("weight", "forecasts")}  # fmt: skip
            total: dict[str, float] = defaultdict(float)
            for fields in by_k.values():
                for f, v in fields.items():
                    total[f] += v
            out[model] = {
                **_metrics(total),
                **counts,
                "horizons": [_metrics(by_k[k]) for k in sorted(by_k)],
            }
        return out


def _metrics(t: Mapping[str, float]) -> dict[str, float]:
    n = t.get("n", 0.0)
    if not n:
        return {"points": 0}

    def ratio(a: str, b: str) -> float:
        return t.get(a, 0.0) / t[b] if t.get(b) else float("nan")

    return {
        "points": int(n),
        "mae": t["abs"] / n,
        "mae_of_mean": t["abs_mean"] / n,
        "rmse": math.sqrt(t["sq"] / n),
        "mase": ratio("scaled", "scaled_n"),
        "pinball": t["pinball"] / n / 3,
        "coverage_p10_p90": t["covered"] / n,
        # each tail alone: calibrated quantiles of a count have at most 10% below p10 and
        # at most 10% above p90, and on intermittent demand far fewer below (p10 is 0)
        "below_p10": t.get("below", 0.0) / n,
        "above_p90": t.get("above", 0.0) / n,
        **references(t["abs"], t["sq"], t["pinball"] / 3, t.get("y_abs", 0.0), t.get("y_sq", 0.0),
                     "zeros"),
        **references(t.get("ref_abs", 0.0), t.get("ref_err_sq", 0.0),
                     # sums kept before it was counted have no ratio, not a zero one
                     t.get("ref_pinball", math.nan) / 3, t.get("ref", 0.0), t.get("ref_sq", 0.0),
                     SEASONAL_NAIVE),
    }  # fmt: skip
