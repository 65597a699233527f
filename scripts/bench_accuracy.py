"""Accuracy benchmark: a full-year rolling-origin backtest of every model, with statsforecast.

    .venv/bin/python scripts/bench_accuracy.py [--data CSV] [--out DIR] [--top 500]
    .venv/bin/python scripts/bench_accuracy.py --data CSV --check-pipeline DAYS
    .venv/bin/python scripts/bench_accuracy.py --data other.csv --format csv \
        --columns 'ts=Date,sku=Item,location=Store,quantity=Units' --date-format '%Y-%m-%d'

Any order file ``shelfcast backtest`` reads is scored the same way (``--format``,
``--columns``, ``--date-format``): a data set other than the development year, one the team
never tuned on, gives the same tables. It needs event times (Online Retail or a CSV with a
time column; JSON lines replay in file order and have none).

It replays the order file bucket by bucket through the worker's own close
(``streamer.pipeline.close.learn_and_forecast`` on a ``models.bank.Bank`` of all series, the same
demand rules, closed-day rule and activity window: a series is active until ``ACTIVE_BUCKETS``
without an order line, a return included), in process, without Kafka or Redis: a year of closes
for every series takes minutes instead of the half hour of ``shelfcast backtest``.

``--check-pipeline DAYS`` checks that this replay is the product's: it runs the first DAYS of
event time both through the replay and through the worker's own pipeline
(``streamer.testing.Harness``) on a fresh embedded Redis, with one partition (one bank of all
series, as here), no LSTM and the same activity window, horizon and calendar, and compares every
series forecast they publish (series, issue bucket, mean/p10/p50/p90 of each step at the
messages' 4 decimals). It prints one line and exits 1 with the first differences if they
disagree (the whole shipped sample, 28,031 forecasts: about 11 s; a test runs it).

Every forecast is issued at a close and scored when its buckets close (prequential). It
prints and saves (``accuracy.json``, ``accuracy.md``) a table for all series and for the
top-N (sku, location) series by volume, and under them the published forecast head to head
with each model on that model's own points (the LSTM forecasts nothing before its first
champion: its row and the published one are not scored on the same points).

On the top-N series it also runs an offline reference with statsforecast (SeasonalNaive,
AutoETS, CrostonOptimized, ADIDA) on weekly rolling origins, each refitted at every origin on
the open buckets before it (season = open buckets per week), and scores the shelfcast models on
exactly the same (series, origin, target) points. statsforecast gives point forecasts only:
their MAE, RMSE and MASE are of that point; ours score the p50 for MAE (the median minimises
absolute error) and the mean for RMSE.

The LSTM (``lstm``) is trained as ``shelfcast backtest`` trains it: a refresh at every
``SHELFCAST_TRAIN_EVERY_BUCKETS`` buckets of event time on the last ``SHELFCAST_HISTORY_BUCKETS``,
promoted only when it wins, the champion then forecasting every series at each close (about
ten minutes more on 2 cores; ``--no-lstm`` skips it). ``lstm_refreshes`` in the JSON says when
each version was trained and why it was or was not promoted.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd
import torch

from models.bank import PUBLISHED, Bank, Forecasts, Settled, groups_of
from models.evaluation import Prequential, references
from models.lstm.kinds import Architecture
from models.lstm.network import Panel, pinball, predict, seasonal_naive
from models.lstm.registry import Registry
from models.lstm.trainer import refresh
from models.oracle import local_level, oracle_coverage
from models.quantiles import Points
from models.rollup import settle
from models.series import ALL_LOCATIONS
from streamer.cli import add_input_options, input_format
from streamer.config.settings import Settings
from streamer.eventtime.clock import DAY_SECONDS, bucket_of, bucket_start
from streamer.eventtime.trading_calendar import TradingCalendar
from streamer.ops.backtest import Truth, truth_from
from streamer.ops.dataset import MISSING_HELP, default_path
from streamer.ops.embedded import EmbeddedRedis
from streamer.ops.replay import InputError, InputFormat, Produced, order_line, read_events
from streamer.pipeline.close import close_of, learn_and_forecast
from streamer.serving.lstm import QUANTILES, version_name, with_mean
from streamer.testing import Harness, forecasts
from streamer.trainer.service import buckets_needed, lstm_config

HORIZON = 7
ACTIVE_BUCKETS = 56  # as SHELFCAST_ACTIVE_BUCKETS
LOCAL_LEVEL = 28  # open buckets either side of a point that models.oracle.local_level reads
SF_MODELS = ("SeasonalNaive", "AutoETS", "CrostonOptimized", "ADIDA")
TARGETS = {"max_rel_mae": 0.85, "coverage": (0.75, 0.85)}


@dataclass
class Run:
    """Outcomes of the shelfcast models: all series, top-N, and top-N on statsforecast's
    points (keyed (series, origin, target))."""

    all: Prequential = field(default_factory=Prequential)
    top: Prequential = field(default_factory=Prequential)
    common: Prequential = field(default_factory=Prequential)
    # of every published point: its series (index into Demand.names), bucket, truth and
    # seasonal naive's absolute error (NaN where it had none)
    codes: list[np.ndarray] = field(default_factory=list)
    buckets: list[np.ndarray] = field(default_factory=list)
    truths: list[np.ndarray] = field(default_factory=list)
    naive: list[np.ndarray] = field(default_factory=list)

    def keep_truths(self, rows: np.ndarray, settled: Settled) -> None:
        for p in settled.points[PUBLISHED]:
            self.codes.append(rows[p.valid].astype(np.int32))
            self.buckets.append(np.full(p.valid.sum(), settled.bucket, np.int32))
            self.truths.append(settled.y[p.valid].astype(np.float32))
            naive = settled.reference.get(p.k)  # none where the fallback issued nothing
            self.naive.append(
                np.full(p.valid.sum(), np.nan, np.float32)
                if naive is None
                else naive[p.valid].astype(np.float32)
            )

    def kept(self, name: str, dtype: type = np.float32) -> np.ndarray:
        return np.concatenate([np.zeros(0, dtype), *getattr(self, name)])

    def oracle(self, is_top: np.ndarray) -> dict[str, dict[str, float]]:
        """The coverage of each series' own 10% and 90% quantiles of these truths
        (``models.oracle``): what a calibrated band covers on the published points."""
        codes, y = self.kept("codes", np.int32), self.kept("truths")
        top = is_top[codes]
        return {"all": oracle_coverage(codes, y), "top": oracle_coverage(codes[top], y[top])}

    def level_scores(
        self, d: Demand, closed: set[int], is_top: np.ndarray, top_key: str
    ) -> dict[str, Any]:
        """MAE of the median and RMSE of the mean of each point's series over the
        ``LOCAL_LEVEL`` open buckets either side of it (``models.oracle.local_level``), against
        seasonal naive's and zeros' on the published points, as the tables' ratios are: over
        all series and the top ones (``top_key``)."""
        codes, y = self.kept("codes", np.int32), self.kept("truths").astype(np.float64)
        cols = self.kept("buckets", np.int32) - d.first
        is_open = ~np.isin(np.arange(d.y.shape[1]) + d.first, list(closed))
        median, mean = local_level(d.y, is_open, codes, cols, LOCAL_LEVEL)
        naive, top = self.kept("naive").astype(np.float64), is_top[codes]
        out: dict[str, Any] = {"k": LOCAL_LEVEL}
        for subset, rows in (("all_series", np.ones(len(y), bool)), (top_key, top)):
            abs_err, sq_err, truth = np.abs(y - median)[rows], ((y - mean) ** 2)[rows], y[rows]
            known = ~np.isnan(naive[rows])
            ref = naive[rows][known]
            ratios = {
                **references(abs_err[known].sum(), sq_err[known].sum(), 0.0, ref.sum(),
                             (ref**2).sum(), "seasonal_naive"),
                **references(abs_err.sum(), sq_err.sum(), 0.0, np.abs(truth).sum(),
                             (truth**2).sum(), "zeros"),
            }  # fmt: skip
            # a point forecast: its pinball loss is half its absolute error, not scored apart
            out[subset] = {
                k.removeprefix("rel_"): v for k, v in ratios.items() if "pinball" not in k
            }
        return out


def series_buckets(truth: Truth) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = defaultdict(dict)
    for (s, b), y in truth.demand.items():
        out[s][b] = y
    return out


@dataclass
class LSTMRun:
    """The LSTM's forecasts at every close, as a backtest's workers would get them, and the
    refreshes behind them."""

    row: dict[str, int]
    first: int
    quantiles: np.ndarray  # [series, bucket, horizon, 3]; NaN where no champion served
    version: np.ndarray  # [bucket]: the champion serving at that close, 0 for none
    refreshes: list[dict[str, object]]
    entrants: EntrantScores

    def offer(self, series: list[str], b: int) -> tuple[str, np.ndarray] | None:
        """The champion's (mean, p10, p50, p90) of ``series`` at the close of ``b``, if one
        served, as ``LSTMServing.steps`` gives them."""
        t = b - self.first
        if 0 <= t < len(self.version) and self.version[t]:
            rows = np.array([self.row[s] for s in series], np.int64)
            return version_name(int(self.version[t])), with_mean(self.quantiles[rows, t])
        return None


class EntrantScores:
    """Each tournament entrant served as if it were the champion, from its refresh to the next,
    scored on the open targets of every active series (``all``) and of the top ones (``top``):
    MAE of the p50 and RMSE of the mean (as the bank reads it, ``SWANSON``), pinball, p10-p90
    coverage, against the weekly seasonal naive of the LSTM's validation and a forecast of
    zeros on the same points."""

    FIELDS = ("n", "abs", "sq", "pinball", "covered", "naive_abs", "naive_sq", "y_abs", "y_sq")

    def __init__(self) -> None:
        self.sums: dict[tuple[str, str], np.ndarray] = defaultdict(
            lambda: np.zeros(len(self.FIELDS))
        )

    def add(
        self, arch: str, q: np.ndarray, y: np.ndarray, naive: np.ndarray, scored: np.ndarray,
        top: np.ndarray,
    ) -> None:  # fmt: skip
        """One close: quantiles [S, H, 3], truth and naive [S, H], which points count [S, H]."""
        p10, p50, p90 = q[..., 0], q[..., 1], q[..., 2]
        mean = with_mean(q)[..., 0]
        levels = torch.tensor(QUANTILES, dtype=torch.float64)
        loss = pinball(torch.from_numpy(q), torch.from_numpy(y), levels).mean(2).numpy()
        columns = (np.ones_like(y), np.abs(y - p50), (y - mean) ** 2, loss,
                   (p10 <= y) & (y <= p90), np.abs(y - naive), (y - naive) ** 2, np.abs(y),
                   y**2)  # fmt: skip
        for subset, rows in (("all", scored), ("top", scored & top[:, None])):
            self.sums[(arch, subset)] += [float(np.sum(c, where=rows)) for c in columns]

    def summary(self, subset: str) -> dict[str, dict[str, object]]:
        """The metrics of ``subset`` (all, top) per entrant, as ``Prequential.summary`` gives
        them per model (no MASE: it needs each series' history)."""
        out: dict[str, dict[str, object]] = {}
        for (arch, which), sums in sorted(self.sums.items()):
            t = dict(zip(self.FIELDS, sums.tolist(), strict=True))
            if which != subset or not t["n"]:
                continue
            n = t["n"]
            out[f"entrant.{arch}"] = {
                "points": int(n), "mae": t["abs"] / n, "mase": math.nan,
                "rmse": math.sqrt(t["sq"] / n), "pinball": t["pinball"] / n,
                "coverage_p10_p90": t["covered"] / n,
                **references(t["abs"], t["sq"], t["pinball"], t["naive_abs"], t["naive_sq"],
                             "seasonal_naive"),
                **references(t["abs"], t["sq"], t["pinball"], t["y_abs"], t["y_sq"], "zeros"),
            }  # fmt: skip
        return out


def traded_grid(
    traded: set[tuple[str, int]], row: dict[str, int], first: int, width: int
) -> np.ndarray:
    """Where each series of ``row`` had an order line, [S, width] from bucket ``first``."""
    out = np.zeros((len(row), width), bool)
    for s, b in traded:
        if s in row and 0 <= b - first < width:
            out[row[s], b - first] = True
    return out


def active(traded: np.ndarray) -> np.ndarray:
    """Whether each series is active at each column [S, W], from where it had an order line
    [S, W]: one within ``ACTIVE_BUCKETS`` (a return is an order line, as in the worker)."""
    t = np.arange(traded.shape[1])
    latest = np.maximum.accumulate(np.where(traded, t, -(10**9)), axis=1)
    return latest >= t - ACTIVE_BUCKETS + 1


def lstm_run(
    truth: Truth,
    traded: set[tuple[str, int]],
    cal: TradingCalendar,
    last: int,
    models: Path,
    top: set[str],
) -> LSTMRun:
    """The trainer on its event-time schedule, as ``shelfcast backtest`` runs it: at every
    ``train_every_buckets``-th bucket a refresh of the tournament (``SHELFCAST_TOURNAMENT``)
    on the last ``history_buckets`` (what Redis holds), promoted only if it wins; the champion
    then forecasts every series at each close until the next refresh, and each entrant is
    scored as if it did (``EntrantScores``)."""
    settings = Settings.from_env()  # its schedule and history, as the worker and trainer read them
    cfg = lstm_config(settings)
    tournament = [Architecture(a) for a in settings.trainer.tournament]
    torch.set_num_threads(1)
    # every series with an order line, as the trainer reads every active series (one with
    # only returns has no demand): the close offers the LSTM's forecasts of all its rows
    demand = {**dict.fromkeys(traded, 0.0), **truth.demand}
    panel = Panel.from_buckets(demand, truth.revenue, truth.closed, cal.weekday, truth.signals)
    registry = Registry(models)
    width = last - panel.first_bucket + 1
    quantiles = np.full((len(panel.series), width, HORIZON, len(QUANTILES)), np.nan, np.float32)
    version = np.zeros(width, np.int64)
    every = settings.trainer.every_buckets
    refreshes: list[dict[str, object]] = []
    entrants: dict[str, int] = {}  # the latest version of each architecture
    scores = EntrantScores()
    row = {s: i for i, s in enumerate(panel.series)}
    live = active(traded_grid(traded, row, panel.first_bucket, width))
    is_top = np.array([s in top for s in panel.series])
    rows = np.arange(len(panel.series))
    closed = {b: b in truth.closed for b in range(panel.first_bucket, last + HORIZON + 1)}
    points = range((panel.first_bucket // every + 1) * every, last + 1, every)
    for point in tqdm(points, desc="LSTM refreshes", unit="refresh"):
        lo = (
            max(point - settings.models.history_buckets + 2, panel.first_bucket)
            - panel.first_bucket
        )
        hi = point - panel.first_bucket + 1
        if hi - lo >= buckets_needed(cfg):
            report = refresh(panel.columns(lo, hi), registry, cfg, architectures=tournament)
            refreshes.append({"through": point, **report.to_dict()})
            entrants.update({e.arch.value: e.version for e in report.entrants})
        champion = registry.latest_champion()
        serving = {v: registry.load(v) for v in set(entrants.values())}
        if champion is not None:
            serving[champion[0]] = champion[1]
        for b in range(point, min(point + every, last + 1)):
            t = b - panel.first_bucket
            ahead = close_of(cal, HORIZON, b, closed, np.zeros(0), np.zeros(0))
            q = {v: predict(model, panel, b, ahead) for v, model in serving.items()}
            if champion is not None:
                quantiles[:, t] = q[champion[0]]
                version[t] = champion[0]
            cols = t + np.arange(1, HORIZON + 1)
            inside = cols < width
            cols = np.minimum(cols, width - 1)
            scored = live[:, t, None] & (inside & ~panel.closed[cols])[None, :]
            y = panel.demand[:, cols]
            naive = seasonal_naive(panel, rows, np.full(len(rows), t), HORIZON)
            for arch, v in entrants.items():
                scores.add(arch, q[v], y, naive, scored, is_top)
    return LSTMRun(row, panel.first_bucket, quantiles, version, refreshes, scores)


def only(settled: Settled, rows: np.ndarray, keep: dict[int, np.ndarray] | None = None) -> Settled:
    """``settled`` with only the points of ``rows`` (and, per ``k``, of ``keep[k]``)."""
    points = {
        model: [
            Points(p.k, p.valid & rows & (keep[p.k] if keep else True), p.steps, p.closed)
            for p in pts
        ]
        for model, pts in settled.points.items()
    }
    return replace(settled, points=points)


def head_to_head(settled: Settled) -> Settled:
    """The published forecast on each model's own points, as ``published@<model>``: a model
    that forecasts only some rows (the LSTM before its first champion, seasonal naive before a
    series' first week) is compared with what was published on exactly those rows."""
    published = {p.k: p for p in settled.points.get(PUBLISHED, [])}
    points = {
        f"{PUBLISHED}@{model}": [
            Points(p.k, p.valid & published[p.k].valid, published[p.k].steps, p.closed)
            for p in pts
            if p.k in published
        ]
        for model, pts in settled.points.items()
        if model != PUBLISHED
    }
    return replace(settled, points=points)


def traded_from(events: Iterable[Produced], bucket_seconds: int) -> set[tuple[str, int]]:
    """Every (series, bucket) with an order line the worker applies, returns included: what
    keeps a series active in the worker (its active set, ``apply.lua``, scores a series by the
    last bucket with any order), not only the buckets with demand."""
    return {
        (line.series, bucket_of(ev.ts, bucket_seconds))
        for ev in events
        if ev.role == "orders" and ev.ts and (line := order_line(ev)) is not None
    }


@dataclass
class Demand:
    """Units and revenue per series (rows, sorted, every series with an order line, returns
    included) and bucket (columns, from ``first``), and where each had an order line."""

    names: list[str]
    first: int
    y: np.ndarray
    revenue: np.ndarray
    traded: np.ndarray


def demand_arrays(truth: Truth, traded: set[tuple[str, int]], last: int) -> Demand:
    names = sorted({s for s, _ in traded})
    row = {s: i for i, s in enumerate(names)}
    first_bucket = min(b for _, b in traded)
    width = last - first_bucket + 1
    y_all, revenue_all = np.zeros((len(names), width)), np.zeros((len(names), width))
    for (s, b), y in truth.demand.items():
        if b <= last:
            y_all[row[s], b - first_bucket] = y
            revenue_all[row[s], b - first_bucket] = truth.revenue.get((s, b), 0.0)
    traded_all = traded_grid(traded, row, first_bucket, width)
    return Demand(names, first_bucket, y_all, revenue_all, traded_all)


@dataclass(frozen=True)
class Closed:
    """One close of the replay: the bucket, the bank's rows (indices into ``Demand.names``),
    the bank after it, what it settled and what it forecast."""

    bucket: int
    rows: np.ndarray
    bank: Bank
    settled: Settled
    fc: Forecasts


def closes(
    d: Demand,
    closed_buckets: set[int],
    cal: TradingCalendar,
    lstm: LSTMRun | None,
    progress: bool = True,
) -> Iterator[Closed]:
    """Every close of every series, as the worker does it (``streamer.pipeline.close``): one bank
    for all series, a series active from its first order line until ``ACTIVE_BUCKETS`` without
    one (a return is an order line: it keeps a series active, as in the worker)."""
    width = d.y.shape[1]
    live = active(d.traded)
    last = d.first + width - 1
    closed = {b: b in closed_buckets for b in range(d.first - 2 * cal.season, last + HORIZON + 1)}
    bank = Bank.default(HORIZON, cal.season)
    for j in tqdm(range(width), desc="closes", unit="bucket", disable=not progress):
        b = d.first + j
        rows = np.flatnonzero(live[:, j])
        bank.align([d.names[i] for i in rows])
        close = close_of(cal, HORIZON, b, closed, d.y[rows, j], d.revenue[rows, j])
        offer = lstm.offer(bank.series, b) if lstm is not None else None
        settled, fc = learn_and_forecast(bank, close, offer)
        assert settled is not None
        yield Closed(b, rows, bank, settled, fc)


def replay(
    d: Demand,
    closed: set[int],
    cal: TradingCalendar,
    is_top: np.ndarray,
    common: dict[str, set[tuple[int, int]]],
    run: Run,
    lstm: LSTMRun | None,
) -> None:
    """Score every close (``closes``) into ``run``; ``is_top`` marks the top series among
    ``d.names``."""
    for c in closes(d, closed, cal, lstm):
        score_close(run, c.bank, c.bucket, c.settled, c.fc, is_top[c.rows], common)
        run.keep_truths(c.rows, c.settled)


def score_close(
    run: Run,
    bank: Bank,
    b: int,
    settled: Settled,
    fc: Forecasts,
    top_rows: np.ndarray,
    common: dict[str, set[tuple[int, int]]],
) -> None:
    """Score what the close of ``b`` settled: all series (and their SKU rollups), the top ones
    (``top_rows``), and the top ones on statsforecast's ``common`` points."""
    run.all.add_settled(settled)
    run.all.add_settled(head_to_head(settled))
    skus, codes = groups_of(bank.series)
    settle(settled, codes, len(skus), run.all)
    top = only(settled, top_rows)
    run.top.add_settled(top)
    run.top.add_settled(head_to_head(top))
    if common:
        keep = {
            k: np.array([(b - k, b) in common.get(s, ()) for s in bank.series])
            for k in range(1, HORIZON + 1)
        }
        run.common.add_settled(only(settled, top_rows, keep))
    run.all.add_shares(bank.names, fc.shares[fc.publishes])
    run.top.add_shares(bank.names, fc.shares[top_rows & fc.publishes])


def statsforecast_reference(
    top: list[str],
    demand: dict[str, dict[int, float]],
    truth: Truth,
    last: int,
    cal: TradingCalendar,
) -> tuple[dict[str, dict[str, float]], set[tuple[str, int, int]]]:
    """statsforecast on the open buckets of each top series, refitted at weekly origins.

    Returns metric sums per model over the (series, origin, target) points, and those points.
    """
    from statsforecast import StatsForecast
    from statsforecast.models import ADIDA, AutoETS, CrostonOptimized, SeasonalNaive

    start = min(b for _, b in truth.demand)
    open_buckets = [b for b in range(start, last + 1) if b not in truth.closed]
    season = max(
        round(cal.season * len(open_buckets) / max(len(open_buckets) + len(truth.closed), 1)), 1
    )
    df = statsforecast_frame(top, demand, open_buckets)
    n_windows = (len(open_buckets) - 5 * season) // season
    if n_windows < 1:
        raise SystemExit("too little data for statsforecast's rolling origins: use more lines")
    # every series needs two seasons of training data before the first origin
    need = HORIZON + season * (n_windows - 1) + 2 * season
    sizes = df.groupby("unique_id").size()
    df = df[df["unique_id"].isin(sizes[sizes >= need].index)]
    print(f"  {df['unique_id'].nunique()} of {len(top)} series are long enough", flush=True)
    sf = StatsForecast(
        models=[
            SeasonalNaive(season_length=season),
            AutoETS(season_length=season),
            CrostonOptimized(),
            ADIDA(),
        ],
        freq=1,
        n_jobs=1,
    )
    cv = sf.cross_validation(df=df, h=HORIZON, step_size=season, n_windows=n_windows)
    cv = cv.reset_index() if "unique_id" not in cv.columns else cv
    return statsforecast_errors(cv, open_buckets)


def statsforecast_frame(
    top: list[str], demand: dict[str, dict[int, float]], open_buckets: list[int]
) -> pd.DataFrame:
    """The top series from their first sale on, indexed by open bucket (statsforecast's
    ``ds``)."""
    rows = []
    for s in top:
        first = min(b for b, y in demand[s].items() if y > 0)
        for idx, b in enumerate(open_buckets):
            if b >= first:
                rows.append((s, idx, demand[s].get(b, 0.0)))
    return pd.DataFrame(rows, columns=["unique_id", "ds", "y"])


def statsforecast_errors(
    cv: pd.DataFrame, open_buckets: list[int]
) -> tuple[dict[str, dict[str, float]], set[tuple[str, int, int]]]:
    """Error sums per model over the cross-validation's points within the horizon, and those
    (series, origin, target) points in buckets."""
    bucket_of_idx = np.array(open_buckets)
    sums: dict[str, dict[str, float]] = {m: defaultdict(float) for m in SF_MODELS}
    points: set[tuple[str, int, int]] = set()
    for row in cv.itertuples(index=False):
        origin, target = int(bucket_of_idx[int(row.cutoff)]), int(bucket_of_idx[int(row.ds)])
        if target - origin > HORIZON:
            continue  # beyond the 7 buckets a shelfcast forecast covers
        points.add((row.unique_id, origin, target))
        for m in SF_MODELS:
            err = abs(row.y - max(float(getattr(row, m)), 0.0))
            sums[m]["n"] += 1
            sums[m]["abs"] += err
            sums[m]["sq"] += err * err
    return sums, points


# The pipeline check (--check-pipeline DAYS): the replay's published forecasts against the
# worker's own pipeline (streamer.testing.Harness) on a real Redis, for the first DAYS.

Published = dict[tuple[str, int], tuple[float, ...]]  # (series, issue bucket) -> numbers
FIELDS = ("mean", "p10", "p50", "p90")


def first_days(events: list[Produced], days: int) -> list[Produced]:
    """The events of the first ``days`` buckets of event time, in file order."""
    start = bucket_of(min(e.ts for e in events), DAY_SECONDS)
    end = bucket_start(start + days, DAY_SECONDS)
    return [e for e in events if e.ts < end]


def script_published(events: list[Produced], cal: TradingCalendar) -> Published:
    """What the replay's closes publish, rounded as the messages are (4 decimals)."""
    truth = truth_from(events, DAY_SECONDS)
    traded = traded_from(events, DAY_SECONDS)
    d = demand_arrays(truth, traded, max(b for _, b in traded))
    out: Published = {}
    for c in closes(d, truth.closed, cal, None, progress=False):
        rows = np.flatnonzero(c.fc.publishes)
        steps = np.round(c.fc.published[rows], 4).reshape(len(rows), -1)
        for i, numbers in zip(rows.tolist(), steps.tolist(), strict=True):
            out[(c.bank.series[i], c.bucket)] = tuple(numbers)
    return out


def check_settings(redis_url: str, home: Path, cal: TradingCalendar) -> Settings:
    """A worker's settings that make its closes the replay's: one partition (one bank of all
    series), no LSTM (an empty model folder), the same activity window, horizon and calendar,
    event time alone."""
    settings = Settings.of(
        redis_url=redis_url, home=home, partitions=1, model_dir=home / "models",
        idle_advance_seconds=0.0, active_buckets=ACTIVE_BUCKETS, horizon=HORIZON,
        bucket_seconds=cal.bucket_seconds, closed_weekdays="", closed_dates="",
        closed_when_no_orders=cal.closed_when_no_orders,
    )  # fmt: skip
    if settings.time.calendar() != cal:
        raise SystemExit(f"the check's calendar {settings.time.calendar()} is not {cal}")
    return settings


def message_numbers(m: dict[str, Any]) -> tuple[float, ...]:
    return tuple(float(step[f]) for step in m["horizon"] for f in FIELDS)


def pipeline_published(events: list[Produced], cal: TradingCalendar) -> tuple[Published, int]:
    """What the worker's pipeline publishes for ``events`` on a fresh embedded Redis, all in
    partition 0, and the last bucket it closed."""
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis")
        server.start()
        try:
            settings = check_settings(server.url, Path(tmp), cal)
            h = Harness(settings)
            topics = settings.kafka.topics
            h.feed([h.record(e.value, topics[e.role]) for e in events])
            through = h.pipeline.closed.get(0, -1)
        finally:
            server.stop()
    out: Published = {}
    for m in forecasts(h.outputs):
        if m["location"] != ALL_LOCATIONS:  # rollups: sums of these, by the same code
            series, bucket = m["forecast_id"].split("|")[:2]
            out[(series, int(bucket))] = message_numbers(m)
    return out, through


def differences(script: Published, pipeline: Published) -> tuple[list[str], float]:
    """Where the two disagree, in bucket order, and the largest difference of a number both
    published."""
    problems: list[str] = []
    worst = 0.0
    for key in sorted(script.keys() | pipeline.keys(), key=lambda k: (k[1], k[0])):
        a, b = script.get(key), pipeline.get(key)
        where = f"{key[0]} issued at bucket {key[1]}"
        if a is None or b is None:
            problems.append(f"{where}: only the {'pipeline' if a is None else 'script'} published")
            continue
        diffs = [abs(x - y) for x, y in zip(a, b, strict=True)]
        worst = max(worst, *diffs)
        i = int(np.argmax(diffs))
        if diffs[i] > 0:
            step, f = divmod(i, len(FIELDS))
            problems.append(f"{where}: step {step + 1} {FIELDS[f]}: script {a[i]}, pipeline {b[i]}")
    return problems, worst


def orders_of(data: Path, limit: int | None, how: InputFormat) -> list[Produced]:
    """The order lines of ``data``, read as ``shelfcast backtest`` reads them."""
    events, _ = read_events(data, limit, how)
    if not any(ev.ts for ev in events):
        raise InputError(
            f"{data} has no event times (JSON lines replay in file order): pass a CSV with a "
            "time column (--format csv --columns ts=...)"
        )
    return events


def check_pipeline(
    data: Path, limit: int | None, days: int, how: InputFormat, shown: int = 10
) -> int:
    """Replay the first ``days`` both ways and compare what they publish; 0 if they agree."""
    events = first_days(orders_of(data, limit, how), days)
    cal = TradingCalendar(frozenset(), frozenset(), DAY_SECONDS)
    pipeline, through = pipeline_published(events, cal)
    script = {k: v for k, v in script_published(events, cal).items() if k[1] <= through}
    problems, worst = differences(script, pipeline)
    closes_ = len({b for _, b in script.keys() | pipeline.keys()})
    what = (
        f"{len(pipeline)} forecasts of the pipeline, {len(script)} of the script, {closes_} "
        f"closes through bucket {through} ({len(events)} events, {days} days of {data.name})"
    )
    if not problems:
        print(f"pipeline check: agree on {what}; largest difference {worst:.4f}")
        return 0
    print(f"pipeline check: DISAGREE on {len(problems)} of {what}; largest difference {worst:.4f}")
    for p in problems[:shown]:
        print(f"  {p}")
    return 1


def table(summary: dict[str, dict[str, object]]) -> list[dict[str, object]]:
    rows = []
    for model, m in summary.items():
        if not m.get("points"):
            continue
        rows.append(
            {
                "model": model,
                "points": m["points"],
                "mae": m["mae"],
                "mae_vs_seasonal_naive": m["rel_mae_vs_seasonal_naive"],
                "rmse_vs_seasonal_naive": m["rel_rmse_vs_seasonal_naive"],
                "pinball_vs_seasonal_naive": m["rel_pinball_vs_seasonal_naive"],
                "mae_vs_zeros": m["rel_mae_vs_zeros"],
                "rmse_vs_zeros": m["rel_rmse_vs_zeros"],
                "pinball_vs_zeros": m["rel_pinball_vs_zeros"],
                "mase": m["mase"],
                "rmse": m["rmse"],
                "pinball": m["pinball"],
                "coverage_p10_p90": m["coverage_p10_p90"],
                "below_p10": m.get("below_p10"),
                "above_p90": m.get("above_p90"),
                "weight": m.get("weight"),
            }
        )
    return rows


TABLE_COLUMNS = ("model", "points", "mae", "mae_vs_seasonal_naive", "mase", "rmse",
                 "rmse_vs_seasonal_naive", "pinball", "pinball_vs_seasonal_naive",
                 "mae_vs_zeros", "rmse_vs_zeros", "pinball_vs_zeros", "coverage_p10_p90",
                 "below_p10", "above_p90", "weight")  # fmt: skip
HEAD_TO_HEAD_COLUMNS = ("model", "points", "mae_published_vs_model", "rmse_published_vs_model",
                        "pinball_published_vs_model", "coverage_model",
                        "coverage_published")  # fmt: skip


def markdown(title: str, rows: list[dict[str, object]], cols: Sequence[str] = TABLE_COLUMNS) -> str:
    out = [f"### {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            if isinstance(v, float):
                cells.append("n/a" if math.isnan(v) else f"{v:.3f}")
            else:
                cells.append("n/a" if v is None else str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--data",
        type=Path,
        default=default_path(),
        help="orders file (default: the Online Retail CSV at the path `shelfcast data path` "
        "prints)",
    )
    ap.add_argument("--out", type=Path, default=Path("bench-results/accuracy"))
    ap.add_argument("--top", type=int, default=500, help="top series by volume (default 500)")
    ap.add_argument("--limit", type=int, help="read only the first N lines (a quick look)")
    ap.add_argument("--no-statsforecast", action="store_true", help="skip the offline reference")
    ap.add_argument("--no-lstm", action="store_true", help="skip the LSTM and its refreshes")
    ap.add_argument(
        "--check-pipeline",
        type=int,
        metavar="DAYS",
        help="only check that the replay publishes what the worker's pipeline publishes for "
        "the first DAYS of the data (on an embedded Redis); exit 1 with the differences if not",
    )
    add_input_options(ap)
    args = ap.parse_args(argv)
    if not args.data.exists():
        ap.error(f"{args.data} not found: {MISSING_HELP}")
    return args


def vs_statsforecast(
    run: Run, sf_sums: dict[str, dict[str, float]]
) -> tuple[list[dict[str, object]], dict[str, object]]:
    """The shelfcast models and statsforecast's on the same points, every MAE relative to
    statsforecast's SeasonalNaive; and the targets' figures."""
    common = table(run.common.summary())
    ref = {r["model"]: r for r in common}
    snaive_mae = sf_sums["SeasonalNaive"]["abs"] / sf_sums["SeasonalNaive"]["n"]
    for m, t in sf_sums.items():
        common.append(
            {
                "model": f"statsforecast.{m}",
                "points": int(t["n"]),
                "mae": t["abs"] / t["n"],
                "mae_vs_seasonal_naive": t["abs"] / t["n"] / snaive_mae,
                "mase": None,
                "rmse": math.sqrt(t["sq"] / t["n"]),
                "pinball": None,
                "coverage_p10_p90": None,
                "weight": None,
            }
        )
    for r in common:
        if not str(r["model"]).startswith("statsforecast."):
            r["mae_vs_seasonal_naive"] = float(r["mae"]) / snaive_mae
    best = min((t["abs"] / t["n"], m) for m, t in sf_sums.items())
    published = ref.get(PUBLISHED, {})
    targets = {
        "published_mae_vs_seasonal_naive": published.get("mae_vs_seasonal_naive"),
        "best_statsforecast": {"model": best[1], "mae": best[0]},
        "published_mae": published.get("mae"),
    }
    return common, targets


def targets_top(rows: list[dict[str, object]]) -> dict[str, object]:
    top_published = next((r for r in rows if r["model"] == PUBLISHED), {})
    return {
        "published_mae_vs_seasonal_naive": top_published.get("mae_vs_seasonal_naive"),
        "coverage_p10_p90": top_published.get("coverage_p10_p90"),
        "required": {"mae_vs_seasonal_naive": "<= 0.85", "coverage_p10_p90": "0.75..0.85"},
    }


def split_head_to_head(
    rows: list[dict[str, object]],
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """The models' rows, and per model the published forecast on that model's own points
    against it: each ratio is the published's over the model's (below 1: the published wins)."""
    mine = [r for r in rows if "@" not in str(r["model"])]
    by_name = {r["model"]: r for r in mine}
    pairs = []
    for r in rows:
        if "@" not in str(r["model"]):
            continue
        model = by_name.get(str(r["model"]).split("@", 1)[1])
        if model is None:
            continue
        pairs.append({
            "model": model["model"], "points": r["points"],
            **{f"{m}_published_vs_model": float(r[m]) / float(model[m])
               for m in ("mae", "rmse", "pinball") if model[m]},
            "coverage_model": model["coverage_p10_p90"],
            "coverage_published": r["coverage_p10_p90"],
        })  # fmt: skip
    return mine, pairs


def oracle_line(o: dict[str, float], level: dict[str, float], k: int) -> str:
    return (
        f"\nA calibrated band on the same points (each series' own 10% and 90% quantiles of "
        f"its truths, models/oracle.py) covers {o['coverage']:.1%} ({o['below_p10']:.1%} "
        f"below p10, {o['above_p90']:.1%} above p90). A forecast that knew each series' "
        f"demand over the {k} open buckets either side of the day (the day left out: their "
        f"median as p50, their mean as mean) scores MAE {level['mae_vs_seasonal_naive']:.3f} "
        f"and RMSE {level['rmse_vs_seasonal_naive']:.3f} x seasonal naive's "
        f"({level['mae_vs_zeros']:.3f} and {level['rmse_vs_zeros']:.3f} x zeros').\n"
    )


def write_outputs(out: Path, data: Path, result: dict[str, Any], n_top: int) -> None:
    """accuracy.json and accuracy.md under ``out``; the tables and targets on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "accuracy.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# Accuracy benchmark: {data.name}, horizons 1-{HORIZON}\n"]
    oracle, level = result["oracle_p10_p90"], result["oracle_local_level"]
    for key, title in (("all_series", "All series"), (f"top_{n_top}", f"Top {n_top} series")):
        md.append(markdown(title, result[key]) + oracle_line(oracle[key], level[key], level["k"]))
    for key, title in (("all_series", "All series"), (f"top_{n_top}", f"Top {n_top} series")):
        md.append(
            markdown(
                f"{title}: the published forecast on each model's points (published ÷ model)",
                result[f"{key}_head_to_head"],
                HEAD_TO_HEAD_COLUMNS,
            )
        )
    if f"top_{n_top}_vs_statsforecast" in result:
        md.append(
            markdown(
                f"Top {n_top} series, statsforecast's weekly origins (MAE vs its SeasonalNaive)",
                result[f"top_{n_top}_vs_statsforecast"],
            )
        )
    text = "\n".join(md)
    (out / "accuracy.md").write_text(text)
    print(text)
    print(json.dumps({k: result[k] for k in result if k.startswith("targets")}, indent=2))
    print(f"saved {out / 'accuracy.json'} and accuracy.md ({result['seconds']} s)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.check_pipeline is not None:
            return check_pipeline(args.data, args.limit, args.check_pipeline, input_format(args))
        return score(args)
    except InputError as exc:
        print(f"bench_accuracy.py: error: {exc}", file=sys.stderr)
        return 2


def score(args: argparse.Namespace) -> int:
    """Every model, the combination and the LSTM's entrants over the whole file."""
    started = time.monotonic()
    events = orders_of(args.data, args.limit, input_format(args))
    truth = truth_from(events, DAY_SECONDS)
    traded = traded_from(events, DAY_SECONDS)
    del events
    demand = series_buckets(truth)
    last = max(b for _, b in truth.demand)
    cal = TradingCalendar(frozenset(), frozenset(), DAY_SECONDS)
    volume = {s: sum(v for v in d.values() if v > 0) for s, d in demand.items()}
    top = sorted(volume, key=volume.__getitem__, reverse=True)[: args.top]

    sf_sums: dict[str, dict[str, float]] = {}
    points: dict[str, set[tuple[int, int]]] = defaultdict(set)
    if not args.no_statsforecast:
        print(f"statsforecast on the top {len(top)} series (weekly rolling origins)...", flush=True)
        sf_sums, sf_points = statsforecast_reference(top, demand, truth, last, cal)
        for s, origin, target in sf_points:
            points[s].add((origin, target))
    lstm = None
    if not args.no_lstm:
        with tempfile.TemporaryDirectory() as models:  # a fresh registry: no old champion
            lstm = lstm_run(truth, traded, cal, last, Path(models), set(top))
    run = Run()
    entrants = lstm.entrants if lstm else EntrantScores()
    d = demand_arrays(truth, traded, last)
    is_top = np.isin(d.names, top)
    replay(d, truth.closed, cal, is_top, points, run, lstm)
    oracle = run.oracle(is_top)
    level = run.level_scores(d, truth.closed, is_top, f"top_{len(top)}")
    result: dict[str, Any] = {
        "data": str(args.data),
        "series": len(demand),
        "top": len(top),
        "closed_buckets": len(truth.closed),
        "seconds": round(time.monotonic() - started, 1),
    }
    for key, subset, prequential in (("all_series", "all", run.all),
                                     (f"top_{len(top)}", "top", run.top)):  # fmt: skip
        rows = table({**prequential.summary(), **entrants.summary(subset)})
        result[key], result[f"{key}_head_to_head"] = split_head_to_head(rows)
    result |= {
        "lstm_refreshes": lstm.refreshes if lstm else None,
        "oracle_p10_p90": {"all_series": oracle["all"], f"top_{len(top)}": oracle["top"]},
        "oracle_local_level": level,
    }
    if sf_sums:
        result[f"top_{len(top)}_vs_statsforecast"], result["targets"] = vs_statsforecast(
            run, sf_sums
        )
    result["targets_top"] = targets_top(result[f"top_{len(top)}"])
    write_outputs(args.out, args.data, result, len(top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
