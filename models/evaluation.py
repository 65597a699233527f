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
* rel_mae: MAE divided by seasonal naive's MAE on the same points (below 1 beats it).

Every message counts for its model and for ``published`` (the topic carries the forecast each
series selected at each bucket), except a SKU's rollup over its locations (``sku@*``), which
counts as ``rollup`` only (``truth`` must hold its demand, the sum over its locations).
Buckets in ``closed``
(the shop did not trade) have no truth and are never scored.

>>> fc = [{"forecast_id": "a@x|0|m@1",
...        "horizon": [{"mean": 2.0, "p10": 1.0, "p50": 2.0, "p90": 3.0}]},
...       {"forecast_id": "a@x|1|m@1", "horizon": []}]
>>> score(fc, {("a@x", 1): 4.0}, season=1)["m"]["mae"]
2.0
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Set
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from models.bank import PUBLISHED, Settled
from models.rollup import ROLLUP


def parse_forecast_id(forecast_id: str) -> tuple[str, int, str]:
    series, bucket, model = forecast_id.rsplit("|", 2)
    return series, int(bucket), model.split("@", 1)[0]


def _pinball(y: Any, p10: Any, p50: Any, p90: Any) -> Any:
    """Pinball losses of the three quantiles, summed (floats or arrays alike)."""
    loss = 0.0
    for q, value in ((0.1, p10), (0.5, p50), (0.9, p90)):
        diff = y - value
        loss = loss + np.maximum(q * diff, (q - 1) * diff)
    return loss


class _Totals:
    """Running sums of one model's errors."""

    __slots__ = ("above", "abs", "below", "common_abs", "common_ref", "covered", "n", "pinball",
                 "sq")  # fmt: skip

    def __init__(self) -> None:
        self.n = 0
        self.abs = self.sq = self.pinball = self.covered = self.below = self.above = 0.0
        self.common_abs = self.common_ref = 0.0


def score(
    forecasts: Iterable[Mapping[str, object]],
    truth: Mapping[tuple[str, int], float],
    season: int = 7,
    closed: Set[int] = frozenset(),
) -> dict[str, dict[str, float]]:
    """Score forecasts in two streaming passes, so a year of them never sits in memory.

    ``forecasts`` must be re-iterable (a list, or ``JsonLines`` over a file). A redelivered copy
    of an id may differ after a restart: the first copy counts. The reference is the classic
    seasonal naive computed from ``truth``: the same slot a season earlier, skipping closed
    buckets, as known when the forecast was issued.
    """
    last: dict[str, int] = {}
    first: dict[str, int] = {}
    seen: set[int] = set()
    duplicates = False
    for f in forecasts:
        series, bucket, _ = parse_forecast_id(str(f["forecast_id"]))
        last[series] = max(last.get(series, bucket), bucket)
        first[series] = min(first.get(series, bucket), bucket)
        h = hash(f["forecast_id"])
        duplicates = duplicates or h in seen
        seen.add(h)
    seen.clear()

    def seasonal_naive(series: str, issued: int, target: int) -> float | None:
        b = target - season
        while b > issued or b in closed:
            b -= season
        return truth.get((series, b), 0.0) if b >= first[series] - season else None

    totals: dict[str, _Totals] = defaultdict(_Totals)
    per_series: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    done: set[int] = set()
    for f in forecasts:
        if duplicates:
            h = hash(f["forecast_id"])
            if h in done:
                continue
            done.add(h)
        series, bucket, model = parse_forecast_id(str(f["forecast_id"]))
        horizon: list[Mapping[str, float]] = f["horizon"]  # type: ignore[assignment]
        # a target counts once its bucket has closed for the series (it got a later forecast)
        targets = range(bucket + 1, min(bucket + len(horizon), last[series]) + 1)
        for name in (model,) if model == ROLLUP else (model, PUBLISHED):
            t = totals[name]
            acc = per_series[(name, series)]
            for target in targets:
                if target in closed:
                    continue
                step = horizon[target - bucket - 1]
                y = truth.get((series, target), 0.0)
                p10, p50, p90 = (float(step[q]) for q in ("p10", "p50", "p90"))
                err = y - float(step["mean"])
                t.n += 1
                t.abs += abs(y - p50)
                t.sq += err * err
                t.pinball += _pinball(y, p10, p50, p90) / 3
                t.covered += p10 <= y <= p90
                t.below += y < p10
                t.above += y > p90
                acc[0] += abs(y - p50)
                acc[1] += 1
                ref = seasonal_naive(series, bucket, target)
                if ref is not None:
                    t.common_abs += abs(y - p50)
                    t.common_ref += abs(y - ref)

    scale: dict[str, float] = {}
    for series, end in last.items():
        # from one season after the series' first close, so no difference reaches before it
        diffs = [
            abs(truth.get((series, b), 0.0) - truth.get((series, b - season), 0.0))
            for b in range(first[series] + season, end + 1)
            if b not in closed and b - season not in closed
        ]
        scale[series] = sum(diffs) / len(diffs) if diffs else 0.0

    out: dict[str, dict[str, float]] = {}
    for name, t in sorted(totals.items()):
        if not t.n:
            continue
        ratios = [
            a / n / scale[s]
            for (m, s), (a, n) in per_series.items()
            if m == name and n and scale[s] > 0
        ]
        out[name] = {
            "points": t.n,
            "mae": t.abs / t.n,
            "rmse": math.sqrt(t.sq / t.n),
            "mase": sum(ratios) / len(ratios) if ratios else float("nan"),
            "rel_mae_vs_seasonal_naive": (
                t.common_abs / t.common_ref if t.common_ref else float("nan")
            ),
            "pinball": t.pinball / t.n,
            "coverage_p10_p90": t.covered / t.n,
            "below_p10": t.below / t.n,
            "above_p90": t.above / t.n,
        }
    return out


class JsonLines:
    """A re-iterable view of a JSON-lines file: each pass reads it again from disk."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __iter__(self) -> Iterator[dict[str, object]]:
        with self.path.open("rb") as f:
            for line in f:
                # orjson: a year of forecasts is millions of lines, read twice
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
              "scaled_n", "ref", "ref_abs")  # fmt: skip

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)

    def add_wins(self, model: str, n: int) -> None:
        """Count ``n`` published forecasts of ``model`` (horizon 0 holds the wins)."""
        if n:
            self.sums[f"{model}|0|wins"] += n

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
        if not len(y):
            return
        sums = self.sums
        key = f"{model}|{k}|"
        mean, p10, p50, p90 = steps.T
        err = y - p50
        sums[key + "n"] += len(y)
        sums[key + "abs"] += float(np.abs(err).sum())
        sums[key + "abs_mean"] += float(np.abs(y - mean).sum())
        sums[key + "sq"] += float(((y - mean) ** 2).sum())
        sums[key + "pinball"] += float(_pinball(y, p10, p50, p90).sum())
        sums[key + "covered"] += float(((p10 <= y) & (y <= p90)).sum())
        sums[key + "below"] += float((y < p10).sum())
        sums[key + "above"] += float((y > p90).sum())
        if scale is not None:
            known = np.nan_to_num(scale) > 0
            if known.any():
                sums[key + "scaled"] += float((np.abs(err[known]) / scale[known]).sum())
                sums[key + "scaled_n"] += float(known.sum())
        if reference is not None:
            known = ~np.isnan(reference)
            if known.any():
                sums[key + "ref"] += float(reference[known].sum())
                sums[key + "ref_abs"] += float(np.abs(err[known]).sum())

    def add_settled(self, settled: Settled) -> None:
        """Every point a bank's close scored (a rollup has its own ``models.rollup.settle``)."""
        for model, points in settled.points.items():
            for p in points:
                ref = settled.reference.get(p.k)
                self.add(
                    model,
                    p.k,
                    settled.y[p.valid],
                    p.steps[p.valid],
                    settled.scale[p.valid],
                    None if ref is None else ref[p.valid],
                )

    def merge(self, sums: Mapping[str, float]) -> None:
        for k, v in sums.items():
            self.sums[k] += v

    def summary(self) -> dict[str, dict[str, object]]:
        """Metrics per model over all horizons, with a ``horizons`` list (k = 1, 2, ...)."""
        grouped: dict[str, dict[int, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
        for key, v in self.sums.items():
            model, k, field = key.rsplit("|", 2)
            grouped[model][int(k)][field] = v
        out: dict[str, dict[str, object]] = {}
        for model, by_k in sorted(grouped.items()):
            wins = int(by_k.pop(0, {}).get("wins", 0))
            total: dict[str, float] = defaultdict(float)
            for fields in by_k.values():
                for f, v in fields.items():
                    total[f] += v
            out[model] = {
                **_metrics(total),
                "wins": wins,
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
        "rel_mae_vs_seasonal_naive": ratio("ref_abs", "ref"),
        "pinball": t["pinball"] / n / 3,
        "coverage_p10_p90": t["covered"] / n,
        # each tail alone: calibrated quantiles of a count have at most 10% below p10 and
        # at most 10% above p90, and on intermittent demand far fewer below (p10 is 0)
        "below_p10": t.get("below", 0.0) / n,
        "above_p90": t.get("above", 0.0) / n,
    }
