"""Prequential scoring of published forecasts against the demand that arrived later.

A forecast issued when bucket ``b`` closed covers ``b+1 .. b+H``; a target counts once its
bucket has closed for that series (the series got a later forecast). Metrics per model, pooled
over every (series, issue bucket, horizon) point:

* MAE, RMSE; pinball loss averaged over p10/p50/p90; p10-p90 coverage;
* MASE: per series, MAE divided by the in-sample MAE of the weekly seasonal naive one-step
  forecast over the series' history, then averaged over series with a non-zero scale;
* rel_mae: MAE divided by seasonal naive's MAE on the same points (below 1 beats it).

``published`` scores the forecast each series selected at each bucket.

>>> fc = [{"forecast_id": "a@x|0|m@1", "selected": True,
...        "horizon": [{"mean": 2.0, "p10": 1.0, "p50": 2.0, "p90": 3.0}]},
...       {"forecast_id": "a@x|1|m@1", "selected": True, "horizon": []}]
>>> score(fc, {("a@x", 1): 4.0}, season=1)["m"]["mae"]
2.0
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

REFERENCE = "seasonal_naive"
PUBLISHED = "published"


def parse_forecast_id(forecast_id: str) -> tuple[str, int, str]:
    series, bucket, model = forecast_id.rsplit("|", 2)
    return series, int(bucket), model.split("@", 1)[0]


def _pinball(y: float, step: Mapping[str, float]) -> float:
    loss = 0.0
    for q, key in ((0.1, "p10"), (0.5, "p50"), (0.9, "p90")):
        diff = y - float(step[key])
        loss += max(q * diff, (q - 1) * diff)
    return loss / 3


class _Totals:
    """Running sums of one model's errors."""

    __slots__ = ("abs", "common_abs", "common_ref", "covered", "n", "pinball", "sq")

    def __init__(self) -> None:
        self.n = 0
        self.abs = self.sq = self.pinball = self.covered = 0.0
        self.common_abs = self.common_ref = 0.0


def score(
    forecasts: Iterable[Mapping[str, object]],
    truth: Mapping[tuple[str, int], float],
    season: int = 7,
) -> dict[str, dict[str, float]]:
    """Score forecasts in three streaming passes, so a year of them never sits in memory.

    ``forecasts`` must be re-iterable (a list, or ``JsonLines`` over a file). A redelivered copy
    of an id may differ after a restart: the first copy counts.
    """
    closed: dict[str, int] = {}
    first: dict[str, int] = {}
    seen: set[int] = set()
    duplicates = False
    for f in forecasts:
        series, bucket, _ = parse_forecast_id(str(f["forecast_id"]))
        closed[series] = max(closed.get(series, bucket), bucket)
        first[series] = min(first.get(series, bucket), bucket)
        h = hash(f["forecast_id"])
        duplicates = duplicates or h in seen
        seen.add(h)
    seen.clear()

    def first_copies() -> Iterable[tuple[str, int, str, Mapping[str, object], list[float]]]:
        """(series, bucket, model, forecast, actuals of its closed targets), first copies."""
        done: set[int] = set()
        for f in forecasts:
            if duplicates:
                h = hash(f["forecast_id"])
                if h in done:
                    continue
                done.add(h)
            series, bucket, model = parse_forecast_id(str(f["forecast_id"]))
            horizon = f["horizon"]
            n = max(0, min(len(horizon), closed[series] - bucket))  # type: ignore[arg-type]
            actual = [truth.get((series, bucket + 1 + k), 0.0) for k in range(n)]
            yield series, bucket, model, f, actual

    def abs_errors(f: Mapping[str, object], actual: list[float]) -> float:
        horizon = f["horizon"]
        # actual covers only the closed targets, a prefix of the horizon
        return sum(abs(y - float(h["mean"])) for y, h in zip(actual, horizon, strict=False))  # type: ignore[call-overload]

    reference: dict[tuple[str, int], float] = {}
    for series, bucket, model, f, actual in first_copies():
        if model == REFERENCE and actual:
            reference[(series, bucket)] = abs_errors(f, actual)

    totals: dict[str, _Totals] = defaultdict(_Totals)
    per_series: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    for series, bucket, model, f, actual in first_copies():
        if not actual:
            continue
        names = (model, PUBLISHED) if f.get("selected") else (model,)
        pair_abs = abs_errors(f, actual)
        for name in names:
            t = totals[name]
            for y, step in zip(actual, f["horizon"], strict=False):  # type: ignore[call-overload]
                err = y - float(step["mean"])
                t.n += 1
                t.abs += abs(err)
                t.sq += err * err
                t.pinball += _pinball(y, step)
                t.covered += float(step["p10"]) <= y <= float(step["p90"])
            acc = per_series[(name, series)]
            acc[0] += pair_abs
            acc[1] += len(actual)
            ref = reference.get((series, bucket))
            if ref is not None:
                t.common_abs += pair_abs
                t.common_ref += ref

    scale: dict[str, float] = {}
    for series, last in closed.items():
        # from one season after the series' first close, so no difference reaches before it
        diffs = [
            abs(truth.get((series, b), 0.0) - truth.get((series, b - season), 0.0))
            for b in range(first[series] + season, last + 1)
        ]
        scale[series] = sum(diffs) / len(diffs) if diffs else 0.0

    out: dict[str, dict[str, float]] = {}
    for name, t in sorted(totals.items()):
        ratios = [
            a / n / scale[s] for (m, s), (a, n) in per_series.items() if m == name and scale[s] > 0
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
        }
    return out


class JsonLines:
    """A re-iterable view of a JSON-lines file: each pass reads it again from disk."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __iter__(self) -> Iterator[dict[str, object]]:
        with self.path.open("rb") as f:
            for line in f:
                yield json.loads(line)
