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

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping

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


def score(
    forecasts: Iterable[Mapping[str, object]],
    truth: Mapping[tuple[str, int], float],
    season: int = 7,
) -> dict[str, dict[str, float]]:
    rows = [(parse_forecast_id(str(f["forecast_id"])), f) for f in forecasts]
    closed: dict[str, int] = {}
    first: dict[str, int] = {}
    for (series, bucket, _), _f in rows:
        closed[series] = max(closed.get(series, bucket), bucket)
        first[series] = min(first.get(series, bucket), bucket)

    points: dict[str, dict[tuple[str, int, int], tuple[float, Mapping[str, float]]]] = defaultdict(
        dict
    )
    for (series, bucket, model), f in rows:
        for k, step in enumerate(f["horizon"]):  # type: ignore[arg-type]
            target = bucket + 1 + k
            if target > closed[series]:
                break
            y = truth.get((series, target), 0.0)
            key = (series, bucket, k)
            # a redelivered copy (same id) may differ after a restart: the first copy counts
            points[model].setdefault(key, (y, step))
            if f.get("selected"):
                points[PUBLISHED].setdefault(key, (y, step))

    scale: dict[str, float] = {}
    for series, last in closed.items():
        # from one season after the series' first close, so no difference reaches before it
        diffs = [
            abs(truth.get((series, b), 0.0) - truth.get((series, b - season), 0.0))
            for b in range(first[series] + season, last + 1)
        ]
        scale[series] = sum(diffs) / len(diffs) if diffs else 0.0

    reference = points.get(REFERENCE, {})
    out: dict[str, dict[str, float]] = {}
    for model, pts in sorted(points.items()):
        if not pts:
            continue
        errs = [(y - float(step["mean"]), y, step) for y, step in pts.values()]
        abs_sum = sum(abs(e) for e, _, _ in errs)
        per_series: dict[str, list[float]] = defaultdict(list)
        for (series, _, _), (y, step) in pts.items():
            per_series[series].append(abs(y - float(step["mean"])))
        ratios = [sum(v) / len(v) / scale[s] for s, v in per_series.items() if scale[s] > 0]
        common = [key for key in pts if key in reference]
        ref_mae = (
            sum(abs(reference[k][0] - float(reference[k][1]["mean"])) for k in common) / len(common)
            if common
            else float("nan")
        )
        mae_common = (
            sum(abs(pts[k][0] - float(pts[k][1]["mean"])) for k in common) / len(common)
            if common
            else float("nan")
        )
        out[model] = {
            "points": len(errs),
            "mae": abs_sum / len(errs),
            "rmse": math.sqrt(sum(e * e for e, _, _ in errs) / len(errs)),
            "mase": sum(ratios) / len(ratios) if ratios else float("nan"),
            "rel_mae_vs_seasonal_naive": mae_common / ref_mae if ref_mae else float("nan"),
            "pinball": sum(_pinball(y, step) for _, y, step in errs) / len(errs),
            "coverage_p10_p90": sum(
                float(step["p10"]) <= y <= float(step["p90"]) for _, y, step in errs
            )
            / len(errs),
        }
    return out
