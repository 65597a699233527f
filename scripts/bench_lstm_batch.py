"""How the batch size and the network's size fill a device: one refresh from scratch per setting.

    .venv/bin/python scripts/bench_lstm_batch.py [--data CSV] [--device cpu|cuda] [--out DIR]
        [--settings 256,1024,4096:0.01,4096:0.01:64] [--seeds 0,1]

A hidden-32 LSTM over 256 windows is a few small kernels a time step: on a GPU the step's
launches and the host's gathering of the windows, not its arithmetic, set the pace. Each
setting is ``BATCH[:LR[:HIDDEN]]`` (the defaults of ``LSTMConfig`` where left out); for each it
trains one refresh from scratch on the full year as the trainer would (its epochs and
windows per epoch), validates it on the last 28 buckets, and records the training time,
windows a second, the peak device memory and the validation scores against the weekly
seasonal naive. A larger batch takes fewer optimizer steps an epoch, so it is read with its
validation MAE: the fastest setting that validates as well as the default is the one for
``SHELFCAST_LSTM_BATCH_SIZE``, ``SHELFCAST_LSTM_LR`` and ``SHELFCAST_LSTM_HIDDEN`` on that
device (docs/lstm.md, "On a GPU").

``--seeds 0,1,2`` trains each setting once per seed, and scores the mean of their quantiles
too (a seed ensemble). It prints a line per run and saves ``bench_lstm_batch.json`` in
``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_lstm import common_parser, cpu_name, data_found, load_panel

from models.lstm.network import (
    GlobalLSTM,
    GlobalModel,
    Inputs,
    LSTMConfig,
    Panel,
    Validation,
    choose_device,
    train,
    validate,
)
from models.lstm.registry import Registry
from models.lstm.trainer import refresh
from streamer.eventtime.clock import DAY_SECONDS
from streamer.eventtime.trading_calendar import TradingCalendar

DEFAULT_SETTINGS = "256,1024,4096,4096:0.01,16384:0.02,4096:0.01:64,4096:0.01:128"


def setting(text: str) -> LSTMConfig:
    """``BATCH[:LR[:HIDDEN]]`` as the trainer's config.

    >>> setting("4096:0.01:64").batch_size, setting("4096:0.01:64").lr, setting("512").hidden
    (4096, 0.01, 32)
    """
    parts = text.split(":")
    try:
        if not 1 <= len(parts) <= 3:
            raise ValueError
        kinds = (("batch_size", int), ("lr", float), ("hidden", int))
        return LSTMConfig(**{name: kind(v) for (name, kind), v in zip(kinds, parts, strict=False)})
    except ValueError as exc:
        why = f" ({exc})" if str(exc) else ""
        raise ValueError(
            f"{text!r}: expected BATCH[:LR[:HIDDEN]], e.g. 4096:0.01:128{why}"
        ) from exc


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = common_parser(__doc__, "bench-results/lstm-batch")
    ap.add_argument(
        "--settings", default=DEFAULT_SETTINGS,
        help=f"comma-separated BATCH[:LR[:HIDDEN]] (default {DEFAULT_SETTINGS})",
    )  # fmt: skip
    ap.add_argument(
        "--seeds", default=str(LSTMConfig.seed),
        help="comma-separated training seeds of every setting (default 0): seeds spread a "
        "validation MAE by about 1%%; with several, a row more scores the mean of their "
        "quantiles (a seed ensemble)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    data_found(ap, args)
    try:
        args.settings = [setting(s) for s in args.settings.split(",")]
    except ValueError as exc:
        ap.error(f"--settings: {exc}")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        ap.error(f"--seeds: {args.seeds!r} is not a comma-separated list of integers")
    return args


def warm_up(panel: Panel, device: torch.device) -> None:
    """One small training first: CUDA's context and cuDNN's plans are made once, untimed."""
    if device.type != "cuda":
        return
    cfg = LSTMConfig(epochs=1, windows_per_epoch=1024)
    train(GlobalLSTM(cfg), panel, cfg, device, panel.last_bucket - 27)


def one(
    panel: Panel, cfg: LSTMConfig, device: torch.device
) -> tuple[dict[str, object], GlobalModel]:
    """A refresh from scratch with ``cfg``: its time, its validation and the trained model."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as tmp, tqdm(total=cfg.epochs, unit="epoch") as bar:
        registry = Registry(tmp, device)
        report = refresh(panel, registry, cfg, device, lambda *_: bar.update(), promote=False)
        model = registry.load(report.version)
    t = report.train
    windows = min(cfg.windows_per_epoch or t.windows, t.windows) * cfg.epochs
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {
        **_setting(cfg),
        "seed": cfg.seed,
        "train_seconds": round(t.seconds, 2),
        "windows_per_second": round(windows / t.seconds),
        "validate_seconds": round(report.validate_seconds, 2),
        "peak_device_mib": None if peak is None else round(peak / 2**20, 1),
        **_scores(report.candidate),
    }, model


class MeanOf:
    """The mean of ``models``' quantiles, validated as one model (a seed ensemble)."""

    def __init__(self, models: list[GlobalModel]) -> None:
        self.models, self.cfg, self.locations = models, models[0].cfg, models[0].locations

    def forecast(self, inputs: Inputs) -> np.ndarray:
        return np.mean([m.forecast(inputs) for m in self.models], axis=0)


def ensemble(panel: Panel, cfg: LSTMConfig, models: list[GlobalModel]) -> dict[str, object]:
    """The seeds' mean, scored on the validation points of each of them."""
    v = validate(MeanOf(models), panel, cfg.validation, cfg.validation_every)
    return {**_setting(cfg), "seed": f"mean of {len(models)}", **_scores(v)}


def _setting(cfg: LSTMConfig) -> dict[str, object]:
    return {"batch_size": cfg.batch_size, "lr": cfg.lr, "hidden": cfg.hidden, "epochs": cfg.epochs}


def _scores(v: Validation) -> dict[str, object]:
    return {
        "validation_mae": round(v.mae, 4),
        "mae_vs_seasonal_naive": round(v.rel_mae, 4),
        "pinball": round(v.pinball, 4),
        "coverage_p10_p90": round(v.coverage, 4),
    }


def _line(r: dict[str, object]) -> str:
    trained = (
        f"train {r['train_seconds']:7.2f} s ({r['windows_per_second']:>9,} windows/s)"
        if "train_seconds" in r
        else f"{r['seed']:>37}"
    )
    return (
        f"batch {r['batch_size']:>6} lr {r['lr']:<6} hidden {r['hidden']:>4}: {trained}, "
        f"MAE {r['validation_mae']:.4f} ({r['mae_vs_seasonal_naive']:.4f} x naive), "
        f"pinball {r['pinball']:.4f}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = choose_device(args.device)
    torch.set_num_threads(args.threads)
    cal = TradingCalendar(frozenset(), frozenset(), DAY_SECONDS)
    print(f"reading {args.data} ...", flush=True)
    panel = load_panel(args.data, cal)
    warm_up(panel, device)
    rows = []
    for cfg in args.settings:
        if args.epochs is not None:
            cfg = replace(cfg, epochs=args.epochs)
        models = []
        for seed in args.seeds:
            row, model = one(panel, replace(cfg, seed=seed), device)
            rows.append(row)
            models.append(model)
            print(_line(row), flush=True)
        if len(models) > 1:
            rows.append(ensemble(panel, cfg, models))
            print(_line(rows[-1]), flush=True)
    result = {
        "data": str(args.data.resolve()),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "settings": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_lstm_batch.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.out / 'bench_lstm_batch.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
