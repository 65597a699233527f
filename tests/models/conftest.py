"""Fixtures of the LSTM tests: one torch thread, and the shipped real-data sample as a panel.

``SHELFCAST_TEST_DEVICE=cuda`` trains and forecasts on a GPU (scripts/bench_gpu.sh), where a
machine has one; CI has none and runs on the CPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

from models.lstm.network import Panel
from streamer.eventtime.trading_calendar import TradingCalendar
from streamer.ops.backtest import truth_from
from streamer.ops.replay import read_online_retail
from tests.conftest import SAMPLE

DAY = 86_400
DEVICE = os.environ.get("SHELFCAST_TEST_DEVICE", "cpu")


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    # two intra-op threads on two shared cores spin-wait on each other at every LSTM step
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def panel() -> Panel:
    events, _ = read_online_retail(SAMPLE)
    truth = truth_from(events, DAY)
    cal = TradingCalendar(frozenset(), frozenset(), DAY)
    return Panel.from_buckets(truth.demand, truth.revenue, truth.closed, cal.weekday)
