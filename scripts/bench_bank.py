"""Benchmark of one partition's model bank alone: learn + forecast, no Redis, no Kafka.

    .venv/bin/python scripts/bench_bank.py [--rows 12500] [--closes 15] [--out DIR]

The array work of a close (``Bank.learn`` and ``Bank.forecast``: five models, their bands,
the learned combination and its calibration, the LSTM offered as an injected model) on
``--rows`` series resampled from the shipped sample's daily demand
(``streamer.ops.bench_close.synthetic``), warmed up for 45 closes, then ``--closes`` timed.
The reference, measured in the same run on 2,000 of the same series: river's
``HoltWinters.learn_one`` + ``forecast(7)``, one object per series. ``shelfcast bench
--close-only`` times the whole close around this (reads, messages, writes); this one
isolates the bank, so a change to the models reads as a ratio on any machine.

It prints and saves ``bench_bank.json`` in ``--out``: ``us_per_series``,
``river_hw_us_per_series``, ``ratio_to_river_hw`` and ``checksum`` (the sum of every
published forecast: equal before and after a change that should not move a number).
"""

from __future__ import annotations

import time

import numpy as np
from tqdm import tqdm

from models.bank import LSTM, Bank
from models.testing import close_of
from streamer.ops import bench_script
from streamer.ops.bench_close import river_reference, synthetic
from streamer.serving.lstm import with_mean

WARMUP = 45
RIVER_ROWS = 2_000


def run(rows: int, closes: int, progress: bool = True) -> dict[str, float]:
    demand = synthetic(rows, WARMUP + closes, seed=0)
    bank = Bank.default()
    bank.align([f"S{i}@L{i % 4}" for i in range(rows)])
    # the LSTM's p10/p50/p90 and mean, as a worker offers them: about its 28-day mean
    level = demand[:, :28].mean(axis=1)[:, None, None]
    lstm = with_mean(np.tile(level * np.array([0.2, 0.8, 2.0]), (1, 7, 1)))
    timed, checksum = 0.0, 0.0
    for b in tqdm(range(WARMUP + closes), desc="closes", unit="close", disable=not progress):
        y = demand[:, b]
        close = close_of(b, y, price=np.where(y > 0, 2.5, np.nan))
        started = time.perf_counter()
        bank.learn(close)
        bank.offer(LSTM, "v1", lstm)
        published = bank.forecast(close).published
        if b >= WARMUP:
            timed += time.perf_counter() - started
        checksum += float(np.nansum(published))
    us = timed / (rows * closes) * 1e6
    river = river_reference(demand[:RIVER_ROWS], WARMUP, closes)
    return {
        "rows": rows,
        "timed_closes": closes,
        "us_per_series": round(us, 3),
        "river_hw_us_per_series": round(river, 3),
        "ratio_to_river_hw": round(us / river, 3),
        "checksum": checksum,
    }


def main() -> None:
    parser = bench_script.parser(__doc__)
    parser.add_argument("--rows", type=int, default=12_500, help="series in the partition")
    parser.add_argument("--closes", type=int, default=15, help="timed closes after warm-up")
    args = parser.parse_args()
    if args.rows < 1 or args.closes < 1:
        parser.error("--rows and --closes must be at least 1")
    result = run(args.rows, args.closes, progress=not args.no_progress)
    bench_script.save(args.out, "bench_bank", result)


if __name__ == "__main__":
    main()
