"""Benchmark of the global LSTM on the full Online Retail year: refresh time, inference time.

    .venv/bin/python scripts/bench_lstm.py [--data CSV] [--device cpu|cuda] [--out DIR]

Builds the panel of every series (the demand rules of ``streamer.ops.backtest.truth_from``), then:

* two full refreshes (``models.lstm.trainer.refresh``: train, validate, save, promote) into a fresh
  registry: the first has no champion, the second is compared with the first, as every
  later refresh is; time per epoch and per refresh, and the validation MAE of the LSTM
  against the weekly seasonal naive on the same points;
* inference at bucket close for the 4,000 series most active in the last 8 weeks: one
  ``predict`` for all of them (median of ``--runs``), against two references measured in the
  same run: the numpy seasonal naive for the same series and the model alone
  on inputs already built, so the figures read as ratios on any machine.

It prints and saves ``bench_lstm.json`` in ``--out``. Targets (CPU): a refresh within
120 s, inference within 200 ms.

Threads: on CPU it runs torch with ``--threads`` intra-op threads (default 1). A hidden-32
LSTM step is too small to split well, so a second thread gains little on an idle machine,
and on 2 shared cores two threads spin-wait on each other at every time step as soon as
another process takes a core: training became about 100x slower in our runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.lstm.kinds import Architecture
from models.lstm.network import (
    ACTIVE_BUCKETS,
    GlobalModel,
    LSTMConfig,
    Panel,
    choose_device,
    inputs_of,
    predict,
    seasonal_naive,
    sold_within,
)
from models.lstm.registry import Registry
from models.lstm.trainer import RefreshReport, refresh
from streamer.config.settings import Settings
from streamer.eventtime.clock import DAY_SECONDS
from streamer.eventtime.trading_calendar import TradingCalendar
from streamer.ops.backtest import truth_from
from streamer.ops.dataset import MISSING_HELP, default_path
from streamer.ops.replay import read_online_retail
from streamer.pipeline.close import close_of
from streamer.trainer.service import GPU_BATCH_SIZE, lstm_config

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"refresh_seconds": 120.0, "inference_ms": 200.0}


def median_ms(fn: Callable[[], object], runs: int, desc: str, device: torch.device) -> float:
    """Median wall time of ``fn`` in ms, after one warm-up call."""
    fn()
    times = []
    for _ in tqdm(range(runs), desc=desc, unit="run", leave=False):
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_panel(path: Path, cal: TradingCalendar) -> Panel:
    events, _ = read_online_retail(path)
    truth = truth_from(events, DAY_SECONDS)
    return Panel.from_buckets(truth.demand, truth.revenue, truth.closed, cal.weekday, truth.signals)


def common_parser(doc: str | None, out: str) -> argparse.ArgumentParser:
    """The options every LSTM benchmark takes: the data, the device, the output folder
    (``out`` under the repository by default), torch's threads and the epochs."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--data", type=Path, default=default_path(),
        help="Online Retail CSV (default: the path `shelfcast data path` prints)",
    )  # fmt: skip
    ap.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--out", type=Path, default=ROOT / out, help=f"default {out}")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--epochs", type=int, help=f"default {LSTMConfig.epochs}")
    return ap


def data_found(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not args.data.exists():
        ap.error(f"{args.data} not found: {MISSING_HELP}")


def overrides(args: argparse.Namespace) -> dict[str, object]:
    """The ``LSTMConfig`` fields the options set."""
    given = {"epochs": args.epochs, "hidden": args.hidden, "batch_size": args.batch_size}
    return {k: v for k, v in {**given, "lr": args.lr}.items() if v is not None}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = common_parser(__doc__, "bench-results/lstm")
    ap.add_argument("--hidden", type=int, help=f"LSTM and MLP units (default {LSTMConfig.hidden})")
    ap.add_argument(
        "--batch-size",
        type=int,
        help=f"windows a step (default {LSTMConfig.batch_size}, {GPU_BATCH_SIZE} on cuda)",
    )
    ap.add_argument("--lr", type=float, help=f"Adam's step size (default {LSTMConfig.lr})")
    ap.add_argument(
        "--signals", action="store_true",
        help="the models read the customer and promotion signals (for an ablation)",
    )  # fmt: skip
    ap.add_argument("--series", type=int, default=4000, help="series forecast at once")
    ap.add_argument("--runs", type=int, default=15, help="timed inference runs (median)")
    ap.add_argument(
        "--tournament", default=Architecture.LSTM.value,
        help="comma-separated architectures each refresh trains and validates "
        f"(default lstm; of {', '.join(a.value for a in Architecture)})",
    )  # fmt: skip
    args = ap.parse_args(argv)
    data_found(ap, args)
    try:  # LSTMConfig's own checks, before the data is read
        replace(LSTMConfig(), **overrides(args))
    except ValueError as exc:
        ap.error(str(exc))
    try:
        args.tournament = [Architecture(a.strip()) for a in args.tournament.split(",")]
    except ValueError as exc:
        ap.error(f"--tournament: {exc}")
    return args


def two_refreshes(
    panel: Panel,
    registry: Registry,
    cfg: LSTMConfig,
    device: torch.device,
    tournament: list[Architecture],
) -> list[RefreshReport]:
    """Two refreshes with seeds 0 and 1, as the trainer runs them: the second one meets the
    first as its champion."""
    refreshes = []
    for seed in (0, 1):
        with tqdm(total=cfg.epochs, desc=f"refresh {seed + 1}/2", unit="epoch") as bar:

            def on_epoch(epoch: int, loss: float, bar: tqdm = bar) -> None:
                bar.set_postfix(loss=f"{loss:.4f}")
                bar.update()

            report = refresh(
                panel, registry, replace(cfg, seed=seed), device, on_epoch,
                architectures=tournament,
            )  # fmt: skip
        refreshes.append(report)
        print(f"  v{report.version}: {report.total_seconds:.1f} s, {report.reason}")
        for e in report.entrants:
            v = e.validation
            print(
                f"    {e.arch:9} v{e.version}: {e.train.seconds:6.1f} s  MAE {v.mae:.4f} "
                f"({v.rel_mae:.3f} x naive)  RMSE {v.rmse:.3f}  pinball {v.pinball:.4f}  "
                f"coverage {v.coverage:.3f}"
            )
    return refreshes


@dataclass(frozen=True)
class Inference:
    """Median ms of one forecast of ``series`` series: ``predict`` whole, the model's forecast of
    inputs already gathered, and the seasonal naive in numpy."""

    series: int
    predict_ms: float
    forward_ms: float
    naive_ms: float


def time_inference(
    panel: Panel,
    cal: TradingCalendar,
    model: GlobalModel,
    cfg: LSTMConfig,
    device: torch.device,
    n_series: int,
    runs: int,
) -> Inference:
    """Forecast the most active series at the last close, as one worker would."""
    last = panel.demand.shape[1] - 1
    active = sold_within(panel, np.array([last]), ACTIVE_BUCKETS)[:, 0]
    recent = panel.demand[:, last - ACTIVE_BUCKETS + 1 :].sum(1) * active
    rows = np.argsort(-recent, kind="stable")[:n_series]
    subset = panel.rows(rows)
    closed = {panel.first_bucket + t: bool(c) for t, c in enumerate(panel.closed)}
    at = panel.last_bucket
    ahead = close_of(cal, cfg.horizon, at, closed, np.zeros(0), np.zeros(0))
    every = np.arange(len(rows))
    origin = np.full(len(rows), last)
    inputs = inputs_of(model, subset, every, origin, ahead)

    def model_only() -> None:
        model.forecast(inputs)

    predict_ms = median_ms(lambda: predict(model, subset, at, ahead), runs, "predict", device)
    forward_ms = median_ms(model_only, runs, "model alone", device)
    naive_ms = median_ms(
        lambda: seasonal_naive(subset, every, origin, cfg.horizon), runs, "naive", device
    )
    return Inference(len(rows), predict_ms, forward_ms, naive_ms)


def refresh_record(r: RefreshReport) -> dict[str, object]:
    return {
        "version": r.version,
        "promoted": r.promoted,
        "reason": r.reason,
        "windows": r.train.windows,
        "train_seconds": round(r.train.seconds, 2),
        "epoch_seconds": [round(s, 2) for s in r.train.epoch_seconds],
        "epoch_loss": [round(x, 4) for x in r.train.epoch_loss],
        "validate_seconds": round(r.validate_seconds, 2),
        "total_seconds": round(r.total_seconds, 2),
        "validation": r.candidate.to_dict(),
        "entrants": [
            {
                "arch": e.arch.value,
                "version": e.version,
                "warm": e.warm,
                "train_seconds": round(e.train.seconds, 2),
                "validation": e.validation.to_dict(),
            }
            for e in r.entrants
        ],
    }


def accuracy(champion: RefreshReport) -> dict[str, object]:
    return {
        "champion": champion.version,
        "points": champion.candidate.points,
        "lstm_mae": round(champion.candidate.mae, 4),
        "seasonal_naive_mae": round(champion.candidate.naive_mae, 4),
        "lstm_vs_seasonal_naive": round(champion.candidate.rel_mae, 4),
        "coverage_p10_p90": round(champion.candidate.coverage, 4),
    }


def inference_figures(t: Inference, runs: int) -> dict[str, object]:
    return {
        "series": t.series,
        "runs": runs,
        "predict_ms": round(t.predict_ms, 2),
        "forecast_only_ms": round(t.forward_ms, 2),
        "seasonal_naive_numpy_ms": round(t.naive_ms, 3),
        "predict_vs_model_alone": round(t.predict_ms / t.forward_ms, 2),
        "predict_vs_seasonal_naive": round(t.predict_ms / t.naive_ms, 1),
    }


def targets(slowest: float, predict_ms: float, champion: RefreshReport) -> dict[str, object]:
    return {
        "refresh_seconds": {
            "limit": TARGETS["refresh_seconds"],
            "measured": round(slowest, 2),
            "pass": slowest <= TARGETS["refresh_seconds"],
        },
        "inference_ms": {
            "limit": TARGETS["inference_ms"],
            "measured": round(predict_ms, 2),
            "pass": predict_ms <= TARGETS["inference_ms"],
        },
        "beats_seasonal_naive": champion.candidate.mae < champion.candidate.naive_mae,
    }


def write_result(out: Path, result: dict[str, Any]) -> None:
    """bench_lstm.json under ``out``; the headline figures and each target's verdict on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_lstm.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("accuracy", "inference", "targets")}, indent=2))
    for name, t in result["targets"].items():
        if isinstance(t, dict):
            verdict = "PASS" if t["pass"] else "FAIL"
            print(f"{verdict} {name}: {t['measured']} (limit {t['limit']})")
    print(f"saved {out / 'bench_lstm.json'}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = choose_device(args.device)
    torch.set_num_threads(args.threads)
    # the trainer's config on this device (its batch on a GPU), then the options'
    cfg = replace(lstm_config(Settings.of(), device), signals=args.signals, **overrides(args))
    load_before = os.getloadavg()

    t0 = time.perf_counter()
    print(f"reading {args.data} ...", flush=True)
    cal = TradingCalendar(frozenset(), frozenset(), DAY_SECONDS)
    panel = load_panel(args.data, cal)
    load_seconds = time.perf_counter() - t0
    print(f"{len(panel.series)} series x {panel.demand.shape[1]} buckets ({load_seconds:.1f} s)")

    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry(tmp, device)
        refreshes = two_refreshes(panel, registry, cfg, device, args.tournament)
        served = registry.latest_champion()
        assert served is not None, "the first refresh beats no champion: see its reason"
        version, model = served
        champion = next(r for r in refreshes if r.version == version)
        timed = time_inference(panel, cal, model, cfg, device, args.series, args.runs)

    slowest = max(r.total_seconds for r in refreshes)
    result = {
        "data": str(args.data.resolve()),
        "series": len(panel.series),
        "buckets": int(panel.demand.shape[1]),
        "closed_buckets": int(panel.closed.sum()),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_before_after": [round(x, 2) for x in (*load_before, *os.getloadavg())],
        "config": cfg.to_dict(),
        "load_seconds": round(load_seconds, 2),
        "refreshes": [refresh_record(r) for r in refreshes],
        "seconds_per_epoch": round(
            statistics.median(s for r in refreshes for s in r.train.epoch_seconds), 2
        ),
        "accuracy": accuracy(champion),
        "inference": inference_figures(timed, args.runs),
        "targets": targets(slowest, timed.predict_ms, champion),
    }
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
