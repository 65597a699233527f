"""``shelfcast report``: PNG charts and one self-contained HTML page from a backtest's output.

The output folder holds what the worker published; the truth (demand per series and day) and the
simulated stock are not in it. Both are recomputed from the replayed input with the backtest's
own functions (``truth_from``, ``simulate``), on the same lines, so the charts show exactly what
was scored. What each chart shows and how: docs/report.md.
"""

from __future__ import annotations

import html
import json
import math
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Figures are drawn without pyplot: no global backend or figure registry, so the charts render
# with Agg on any machine, display or not.
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from models.base import SEASON
from models.evaluation import JsonLines, parse_forecast_id
from models.rollup import ROLLUP
from models.series import ALL_LOCATIONS, is_rollup, series_key, sku_of
from streamer.eventtime.clock import DAY_SECONDS, epoch
from streamer.ops.alert_quality import MISSES
from streamer.ops.backtest import rollup_demand, truth_from
from streamer.ops.policies import MIN_MAX_SCALES, SEASONAL_NAIVE_REVIEWS
from streamer.ops.replay import InputFormat, Produced, read_events
from streamer.ops.simulation import SimulationSettings, StockTrace, simulate

__all__ = [
    "ALERT_SERIES",
    "LEGEND",
    "Backtest",
    "Chart",
    "OneStep",
    "Step",
    "alert_chart",
    "alert_series",
    "error_chart",
    "forecast_chart",
    "key_numbers",
    "level_at",
    "load",
    "one_step",
    "policy_chart",
    "render_html",
    "stock_levels",
    "top_series",
    "week_of",
    "weekly_mae",
    "write_report",
]

ALERT_SERIES = 3
LEGEND = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": 8}  # beside the plot


@dataclass(frozen=True, slots=True)
class Step:
    """The first horizon step of one published forecast."""

    model: str
    mean: float
    p10: float
    p50: float
    p90: float


@dataclass
class OneStep:
    """A series' actual demand per day and the 1-step-ahead forecast of that day (issued when
    the day before closed). NaN where the shop was closed or no forecast was issued."""

    series: str
    days: list[int]
    actual: list[float]
    mean: list[float]
    p10: list[float]
    p90: list[float]


@dataclass
class Backtest:
    """A backtest's outputs with its truth and simulated stock recomputed from its input."""

    summary: dict[str, object]
    steps: dict[tuple[str, int], Step]  # (series, issue bucket) -> first horizon step
    demand: dict[tuple[str, int], float]  # locations and rollups
    closed: Set[int]
    events: list[Produced]  # the replayed events with the simulated inventory
    trace: StockTrace
    alerts: list[dict[str, object]]


def load(backtest_dir: Path) -> Backtest:
    """Read a backtest folder; raises FileNotFoundError naming what is missing."""
    summary_path = backtest_dir / "summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(
            f"{summary_path} not found: point at a folder written by "
            "`shelfcast backtest FILE --out DIR` or `shelfcast demo`"
        )
    summary = json.loads(summary_path.read_text())
    source = Path(summary["input"])
    if not source.is_file():
        raise FileNotFoundError(
            f"the backtest's input {source} is gone: the report recomputes demand and stock "
            "from it, so restore it there or rerun the backtest"
        )
    # the same lines as the backtest read: its limit is not stored, the count it read is
    read = summary["read"]
    how = InputFormat(
        read.get("format") or None, read.get("columns") or {}, read.get("date_format")
    )
    events, _ = read_events(source, read["lines"], how)
    truth = truth_from(events, DAY_SECONDS)
    settings = SimulationSettings(**summary["stock_simulation"]["settings"])
    events, _, trace = simulate(events, settings)
    steps: dict[tuple[str, int], Step] = {}
    for f in JsonLines(backtest_dir / "forecasts.jsonl"):
        if f["bucket"] != "1d":
            raise ValueError(f"the report draws daily buckets, forecasts use {f['bucket']!r}")
        series, bucket, model = parse_forecast_id(str(f["forecast_id"]))
        if (series, bucket) not in steps:  # a redelivered copy: the first one counts
            h = f["horizon"][0]  # type: ignore[index]
            steps[(series, bucket)] = Step(model, h["mean"], h["p10"], h["p50"], h["p90"])
    alerts = list({a["alert_id"]: a for a in JsonLines(backtest_dir / "alerts.jsonl")}.values())
    demand = {**truth.demand, **rollup_demand(truth.demand)}
    return Backtest(summary, steps, demand, truth.closed, events, trace, alerts)


def top_series(
    steps: Mapping[tuple[str, int], Step], demand: Mapping[tuple[str, int], float], top: int
) -> list[str]:
    """The ``top`` SKUs by units sold: each one's rollup series, else its biggest location.

    >>> steps = {("a@x", 0): None, ("a@y", 0): None, ("b@x", 0): None, ("b@*", 0): None}
    >>> top_series(steps, {("a@x", 1): 5, ("a@y", 1): 9, ("b@x", 1): 3, ("b@*", 1): 3}, 2)
    ['a@y', 'b@*']
    """
    volume: dict[str, float] = defaultdict(float)
    for (series, _), y in demand.items():
        volume[series] += y
    forecast = {series for series, _ in steps}
    skus: dict[str, list[str]] = defaultdict(list)
    for series in forecast:
        skus[sku_of(series)].append(series)
    sku_volume = {
        sku: sum(volume[s] for s in series if not is_rollup(s)) for sku, series in skus.items()
    }
    out = []
    for sku in sorted(sku_volume, key=lambda k: (-sku_volume[k], k))[:top]:
        rollup = series_key(sku, ALL_LOCATIONS)
        out.append(rollup if rollup in forecast else max(skus[sku], key=volume.__getitem__))
    return out


def one_step(
    series: str,
    steps: Mapping[tuple[str, int], Step],
    demand: Mapping[tuple[str, int], float],
    closed: Set[int],
) -> OneStep:
    """Actual and 1-step-ahead forecast per day, over the days the scoring counts: after the
    series' first forecast, up to its last one (a later forecast means the day closed)."""
    issued = sorted(b for s, b in steps if s == series)
    days = list(range(issued[0] + 1, issued[-1] + 1)) if issued else []
    nan = math.nan
    out = OneStep(series, days, [], [], [], [])
    for day in days:
        out.actual.append(nan if day in closed else demand.get((series, day), 0.0))
        step = steps.get((series, day - 1))
        out.mean.append(step.mean if step else nan)
        out.p10.append(step.p10 if step else nan)
        out.p90.append(step.p90 if step else nan)
    return out


def week_of(day: int) -> int:
    """The Monday starting the week of an epoch day (day 0, 1970-01-01, was a Thursday).

    >>> [week_of(d) for d in (3, 4, 10, 11)]
    [-3, 4, 4, 11]
    """
    return day - (day + 3) % 7


def weekly_mae(
    steps: Mapping[tuple[str, int], Step],
    demand: Mapping[tuple[str, int], float],
    closed: Set[int],
    rollups: bool,
) -> dict[int, tuple[float, float]]:
    """Per week: the MAE of the 1-step p50 of the published location forecasts (or of the SKU
    rollups) and the seasonal naive's MAE on the same points, like the prequential scores.

    >>> steps = {("a@x", 7): Step("m", 1.0, 0.0, 1.0, 2.0), ("a@x", 8): Step("m", 0, 0, 0, 0)}
    >>> weekly_mae(steps, {("a@x", 8): 4.0, ("a@x", 1): 3.0}, set(), rollups=False)
    {4: (3.0, 1.0)}
    """
    last: dict[str, int] = defaultdict(int)
    for series, bucket in steps:
        last[series] = max(last[series], bucket)
    sums: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for (series, bucket), step in steps.items():
        target = bucket + 1
        if (step.model == ROLLUP) != rollups or target in closed or target > last[series]:
            continue
        reference = target - SEASON
        while reference in closed:
            reference -= SEASON
        y = demand.get((series, target), 0.0)
        acc = sums[week_of(target)]
        acc[0] += abs(y - step.p50)
        acc[1] += abs(y - demand.get((series, reference), 0.0))
        acc[2] += 1
    return {week: (a / n, r / n) for week, (a, r, n) in sorted(sums.items())}


def stock_levels(events: Iterable[Produced], series: str) -> tuple[list[float], list[float]]:
    """On-hand stock of a series after each of its events (in time order), from its first
    stock count on, by the worker's rules (docs/alerts.md): a count sets it and already holds
    every movement up to its time, a stock change adds, an order (or return) subtracts."""
    sku = sku_of(series)
    times: list[float] = []
    levels: list[float] = []
    on_hand: float | None = None
    counted = -math.inf
    for ev in events:
        if ev.key != sku:
            continue
        obj = json.loads(ev.value)
        if series_key(obj["sku"], obj["location"]) != series:
            continue
        if ev.role == "inventory" and obj.get("on_hand") is not None:
            on_hand, counted, change = obj["on_hand"], ev.ts, 0
        elif ev.ts <= counted:
            continue
        else:
            change = -obj["quantity"] if ev.role == "orders" else obj.get("delta") or 0
        if on_hand is None:
            continue  # unknown until its first count
        on_hand += change
        times.append(ev.ts)
        levels.append(on_hand)
    return times, levels


def alert_series(alerts: Sequence[Mapping[str, object]], trace: StockTrace, n: int) -> list[str]:
    """Up to ``n`` series with alerts: those that also ran out of stock first, then the most
    alerts."""
    count: dict[str, int] = defaultdict(int)
    for a in alerts:
        count[series_key(str(a["sku"]), str(a["location"]))] += 1
    ran_out = {series for series, _ in trace.stockouts}
    return sorted(count, key=lambda s: (s not in ran_out, -count[s], s))[:n]


def _dates(epoch_seconds: Iterable[float]) -> list[datetime]:
    return [datetime.fromtimestamp(ts, UTC) for ts in epoch_seconds]


def _figure(rows: int, height: float) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(10, height * rows), layout="constrained")
    return fig, list(fig.subplots(rows, 1, squeeze=False)[:, 0])


def forecast_chart(charts: Sequence[OneStep], path: Path) -> None:
    fig, axes = _figure(len(charts), 2.4)
    for ax, c in zip(axes, charts, strict=True):
        x = _dates(d * DAY_SECONDS for d in c.days)
        ax.fill_between(x, c.p10, c.p90, step="mid", alpha=0.25, color="C0", label="p10-p90")
        ax.plot(x, c.mean, drawstyle="steps-mid", color="C0", label="1-step forecast (mean)")
        ax.plot(x, c.actual, marker=".", color="black", linewidth=1, label="actual")
        ax.set_title(c.series, loc="left", fontsize=10)
        ax.set_ylabel("units / day")
    axes[0].legend(**LEGEND)
    fig.savefig(path, dpi=90)


def error_chart(
    panels: Sequence[tuple[str, str, Mapping[int, tuple[float, float]]]], path: Path
) -> None:
    """One panel per (title, forecast label, weekly MAE of the forecast and of the naive)."""
    fig, axes = _figure(len(panels), 2.8)
    for ax, (title, label, weeks) in zip(axes, panels, strict=True):
        x = _dates(w * DAY_SECONDS for w in weeks)
        model, naive = zip(*weeks.values(), strict=True) if weeks else ((), ())
        ax.plot(x, model, marker="o", label=f"{label} 1-step forecast (p50)")
        ax.plot(x, naive, marker="s", linestyle="--", label="seasonal naive (a week earlier)")
        ax.set_title(title, loc="left", fontsize=10)
        ax.set_ylabel("MAE, units / day")
        ax.legend(**LEGEND)
    axes[-1].set_xlabel("week starting")
    fig.savefig(path, dpi=90)


def level_at(times: Sequence[float], levels: Sequence[float], ts: float) -> float:
    """The stock level after every event up to ``ts`` (NaN before the first).

    >>> level_at([10.0, 20.0], [5.0, 3.0], 20.0), level_at([10.0], [5.0], 9.0)
    (3.0, nan)
    """
    i = bisect_right(times, ts)
    return levels[i - 1] if i else math.nan


def alert_chart(series: Sequence[str], data: Backtest, path: Path) -> None:
    fig, axes = _figure(len(series), 2.6)
    for ax, s in zip(axes, series, strict=True):
        _alert_panel(ax, s, data)
    fig.savefig(path, dpi=90)


def _alert_panel(ax: Axes, s: str, data: Backtest) -> None:
    """Series ``s``'s simulated stock with its alerts and stock-outs."""
    times, levels = stock_levels(data.events, s)
    ax.plot(_dates(times), levels, drawstyle="steps-post", color="C0", label="on hand")
    ax.axhline(0, color="grey", linewidth=0.8)
    mine = [a for a in data.alerts if series_key(str(a["sku"]), str(a["location"])) == s]
    at = [epoch(str(a["ts"])) for a in mine]
    _alert_marks(ax, mine, at, [level_at(times, levels, ts) for ts in at])
    outs = [ts for x, ts in data.trace.stockouts if x == s]
    for i, when in enumerate(_dates(outs)):
        ax.axvline(when, color="black", linestyle=":", label="stock-out" if i == 0 else None)
    ax.set_title(s, loc="left", fontsize=10)
    ax.set_ylabel("units")
    ax.legend(**LEGEND)


def _alert_marks(
    ax: Axes, mine: Sequence[Mapping[str, Any]], at: list[float], simulated: list[float]
) -> None:
    """Each alert at its time ``at``: its status at the ``simulated`` stock then, and its
    reorder point."""
    for status, marker, color in (("raised", "^", "C3"), ("cleared", "v", "C2")):
        picked = [i for i, a in enumerate(mine) if a["status"] == status]
        ax.scatter(_dates(at[i] for i in picked), [simulated[i] for i in picked],
                   marker=marker, color=color, zorder=3, label=f"alert {status}")  # fmt: skip
    # In a replay the worker reads the inventory topic independently of the orders and can
    # count a delivery before the close that raised the alert: show what the alert saw.
    off = [i for i, a in enumerate(mine) if a["on_hand"] != simulated[i]]
    if off:
        ax.scatter(_dates(at[i] for i in off), [mine[i]["on_hand"] for i in off],
                   marker="o", facecolors="none", edgecolors="grey", zorder=3,
                   label="on hand the alert reported")  # fmt: skip
    ax.scatter(_dates(at), [a["reorder_point"] for a in mine], marker="_", s=200, color="C1",
               zorder=3, label="reorder point at alert")  # fmt: skip


def policy_chart(inventory: Mapping[str, Any], path: Path) -> None:
    """Fill rate against mean stock on hand (days of demand), one line per policy."""
    fig, (ax,) = _figure(1, 4.0)
    rows = inventory["tradeoff"]
    for name, style in (("shelfcast", "o-"), ("seasonal_naive", "s--")):
        points = [(r[name]["mean_on_hand_days"], r[name]["fill_rate"]) for r in rows]
        ax.plot(*zip(*points, strict=True), style, label=f"{name} (service 0.90/0.95/0.98)")
    scales, reviews = MIN_MAX_SCALES, SEASONAL_NAIVE_REVIEWS
    curves = (
        ("min_max_curve", "^:", f"min_max (settings x{min(scales)} to x{max(scales)})"),
        (
            "seasonal_naive_curve",
            "s:",
            f"seasonal_naive (review {min(reviews)}-{max(reviews)} days)",
        ),
    )
    for key, style, label in curves:
        points = sorted((c["mean_on_hand_days"], c["fill_rate"]) for c in inventory.get(key, []))
        if points:  # a summary from before the seasonal-naive curve has none
            ax.plot(*zip(*points, strict=True), style, label=label)
    bound = inventory["policies"]["perfect_foresight"]
    ax.plot([bound["mean_on_hand_days"]], [bound["fill_rate"]], "k*", label="perfect foresight")
    if loop := inventory.get("closed_loop"):
        ax.plot([loop["mean_on_hand_days"]], [loop["fill_rate"]], "mD", label="closed loop")
    # the policies' stock spans 40 to 1,000 days: on a linear axis the ones that matter, in
    # the first hundred, sit on top of each other
    ax.set_xscale("log")
    ax.set_xlabel("mean stock on hand, days of demand (log scale)")
    ax.set_ylabel("fill rate")
    ax.legend(**LEGEND)
    fig.savefig(path, dpi=90)


def _num(value: object, spec: str) -> str:
    if not isinstance(value, int | float) or math.isnan(value):
        return "n/a"
    return format(value, spec)


def key_numbers(summary: Mapping[str, object]) -> list[tuple[str, str]]:
    """The page's table, (label, value) rows from ``summary.json``."""
    s: dict = dict(summary)  # type: ignore[type-arg]
    published = s["accuracy"].get("published", {})
    refreshes = s["lstm_refreshes"]
    return [
        *_forecast_numbers(s, published),
        *_policy_numbers(s.get("inventory")),
        *_alert_numbers(s["alert_quality"]),
        ("LSTM refreshes (promoted)",
         f"{len(refreshes)} ({sum(bool(r.get('promoted')) for r in refreshes)})"),
    ]  # fmt: skip


def _forecast_numbers(s: dict, published: dict) -> list[tuple[str, str]]:
    return [
        ("input", f"{s['input']} ({s['read']['lines']} lines)"),
        ("events", f"{s['events_in']} ({s['orders_events']} orders, "
                   f"{s['inventory_events']} stock; {s['dlq']} to the DLQ)"),
        ("series", f"{s['series']} locations, {s['skus_rolled_up']} SKU rollups"),
        ("published MAE (p50, horizons 1-7)", _num(published.get("mae"), ".2f")),
        ("published MAE / seasonal naive MAE, same points",
         f"{_num(published.get('rel_mae_vs_seasonal_naive'), '.3f')} (below 1 beats it)"),
        ("p10-p90 coverage (target 80%)", _num(published.get("coverage_p10_p90"), ".1%")),
    ]  # fmt: skip


def _policy_numbers(inventory: dict | None) -> list[tuple[str, str]]:
    if not inventory:  # summaries from before the reference policies
        return []
    rows = [("closed loop", inventory["closed_loop"])] if "closed_loop" in inventory else []
    rows += list(inventory["policies"].items())
    return [
        (f"fill rate / stock, {name}", f"{_num(p['fill_rate'], '.1%')} / "
         f"{_num(p['mean_on_hand_days'], '.1f')} days of demand ({p['orders']} orders)")
        for name, p in rows
    ]  # fmt: skip


def _alert_numbers(q: dict | None) -> list[tuple[str, str]]:
    if q is None:  # a closed loop: no simulated restock policy to score the alerts against
        return []
    misses = q.get("misses", {})  # summaries from before the breakdown have none
    return [
        ("simulated stock-outs", str(q["stockouts"])),
        (f"alert recall (raised at least {q['lead_time_days']:g} days ahead)",
         _num(q["recall"], ".1%")),
        ("false alarms / flapping", f"{_num(q['false_alarm_rate'], '.1%')} / "
                                    f"{_num(q['flapping_rate'], '.1%')}"),
        ("time with an alert raised", _num(q.get("alert_active_share"), ".1%")),
        ("missed stock-outs: series too young / cleared before / beyond the series' "
         "history / raised late",
         " / ".join(str(misses.get(k, "n/a")) for k in MISSES)),
        ("alert recall over the foreseeable stock-outs",
         _num(misses.get("recall_foreseeable"), ".1%")),
    ]  # fmt: skip


def render_html(summary: Mapping[str, object], charts: Sequence[tuple[str, str]]) -> str:
    """The page: key numbers, the stock simulation's settings, and each chart with a caption."""
    esc = html.escape
    rows = "\n".join(
        f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in key_numbers(summary)
    )
    settings = summary["stock_simulation"]["settings"]  # type: ignore[index]
    stock = ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in settings.items())
    figures = "\n".join(
        f'<figure><img src="{esc(src)}" alt="{esc(caption)}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
        for src, caption in charts
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>shelfcast backtest report</title>
<style>
body {{ font-family: sans-serif; max-width: 60rem; margin: 2rem auto; color: #222; }}
table {{ border-collapse: collapse; }} th, td {{ padding: .2rem .8rem; text-align: left; }}
th {{ font-weight: normal; color: #555; }} img {{ max-width: 100%; }}
figure {{ margin: 2rem 0; }} figcaption, .note {{ color: #555; font-size: .9rem; }}
</style></head><body>
<h1>shelfcast backtest report</h1>
<table>
{rows}
</table>
<p class="note">Stock was simulated: the order data has none (docs/alerts.md). Settings:
{esc(stock)}. Alerts are scored against the simulated stock-outs.</p>
{figures}
</body></html>
"""


Chart = tuple[str, str]  # (file name, caption)


def _forecast_figure(data: Backtest, folder: Path, top: int) -> list[Chart]:
    if not (picked := top_series(data.steps, data.demand, top)):
        return []
    forecast_chart(
        [one_step(s, data.steps, data.demand, data.closed) for s in picked],
        folder / "forecast_vs_actual.png",
    )
    return [
        (
            "forecast_vs_actual.png",
            f"The top {len(picked)} SKUs by units sold (their rollup over all "
            "locations where there is one): actual demand per day against the "
            "forecast for that day issued the day before, with its p10-p90 band.",
        )
    ]


def _error_figure(data: Backtest, folder: Path) -> list[Chart]:
    locations = weekly_mae(data.steps, data.demand, data.closed, rollups=False)
    rollups = weekly_mae(data.steps, data.demand, data.closed, rollups=True)
    error_chart(
        [
            ("location series: the model the worker published for each", "published", locations),
            ("SKU rollups (sum over locations)", "rollup", rollups),
        ],
        folder / "error_by_week.png",
    )
    return [
        (
            "error_by_week.png",
            "Weekly MAE of the published 1-step forecasts against the seasonal naive "
            "(same weekday a week earlier) on the same days: location series on top, "
            "SKU rollups below.",
        )
    ]


def _policy_figure(data: Backtest, folder: Path) -> list[Chart]:
    if not (inventory := data.summary.get("inventory")):
        return []
    policy_chart(inventory, folder / "fill_rate_vs_stock.png")  # type: ignore[arg-type]
    return [
        (
            "fill_rate_vs_stock.png",
            "What a planner gets from each reorder policy on the same demand "
            "(docs/alerts.md): fill rate against the stock held, in days of demand. "
            "shelfcast's rule and the seasonal-naive rule at service levels 0.90, 0.95 "
            "and 0.98; the min/max rule at its settings scaled x0.5 to x3; the "
            "perfect-foresight bound; and the closed loop when the backtest ran one.",
        )
    ]


def _alert_figure(data: Backtest, folder: Path) -> list[Chart]:
    closed_loop = data.summary.get("alert_quality") is None
    if closed_loop or not (picked := alert_series(data.alerts, data.trace, ALERT_SERIES)):
        return []
    alert_chart(picked, data, folder / "alerts_vs_stock.png")
    return [
        (
            "alerts_vs_stock.png",
            "Simulated on-hand stock of series with alerts (those that ran out "
            "first): alerts raised and cleared, the reorder point at each alert, "
            "and stock-outs (dotted). Hollow circles: the on-hand an alert reported, "
            "where the worker had already counted a later delivery.",
        )
    ]


def write_report(backtest_dir: Path, out: Path | None = None, top: int = 5) -> Path:
    """Write the charts and ``index.html`` (default ``backtest_dir/report/``); returns its path."""
    out = out or backtest_dir / "report" / "index.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    data = load(backtest_dir)
    charts = [
        *_forecast_figure(data, out.parent, top),
        *_error_figure(data, out.parent),
        *_policy_figure(data, out.parent),
        *_alert_figure(data, out.parent),
    ]
    out.write_text(render_html(data.summary, charts))
    return out
