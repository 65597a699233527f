"""The global LSTM on the real demo slice: it learns, respects closed days, stays on the CPU."""

from __future__ import annotations

import importlib.metadata
from dataclasses import replace

import numpy as np
import pytest
import torch

from models.lstm import network
from models.lstm.network import (
    GlobalLSTM,
    LSTMConfig,
    Panel,
    Precision,
    choose_device,
    predict,
    seasonal_naive,
    train,
    training_windows,
    validate,
    validation_points,
)
from models.testing import close_of
from streamer.ops.backtest import truth_from
from streamer.ops.replay import read_online_retail
from tests.conftest import SAMPLE
from tests.models.conftest import DEVICE

DAY = 86_400
SMALL = LSTMConfig(seq_len=28, hidden=16, epochs=6, windows_per_epoch=4096, batch_size=128)


def test_panel_keeps_the_demand_rules_of_truth_from(panel: Panel) -> None:
    events, _ = read_online_retail(SAMPLE)
    truth = truth_from(events, DAY)
    assert panel.demand.sum() == pytest.approx(sum(truth.demand.values()), rel=1e-6)
    closed = {panel.first_bucket + t for t in np.flatnonzero(panel.closed)}
    assert closed == truth.closed
    assert not panel.demand[:, panel.closed].any()  # a closed day has no sale, not a zero
    sold = panel.demand > 0
    assert np.isnan(panel.price[~sold]).all()
    assert not (panel.price[sold] <= 0).any()  # free lines sell at no known price: NaN
    assert np.isnan(panel.price[sold]).mean() < 0.01
    assert panel.weekday[panel.closed].tolist().count(5) > 20  # no Saturday trading


def test_training_lowers_the_validation_loss(panel: Panel) -> None:
    model = GlobalLSTM(SMALL)
    before = validate(model, panel, SMALL.validation, SMALL.validation_every)
    report = train(model, panel, SMALL, DEVICE, panel.last_bucket + 1 - SMALL.validation)
    after = validate(model, panel, SMALL.validation, SMALL.validation_every)
    assert len(report.epoch_loss) == len(report.epoch_seconds) == SMALL.epochs
    assert after.points == before.points > 1000
    assert after.pinball < 0.98 * before.pinball
    assert after.mae < 0.97 * before.mae
    assert after.naive_mae == before.naive_mae


@pytest.mark.parametrize("bfloat16", [True, False])
def test_training_on_cpu_is_repeatable_in_either_precision(panel: Panel, bfloat16: bool) -> None:
    cfg = LSTMConfig(
        seq_len=28, hidden=4, epochs=1, windows_per_epoch=512, batch_size=128, bfloat16=bfloat16
    )
    end = panel.last_bucket + 1 - cfg.validation
    a, b = GlobalLSTM(cfg), GlobalLSTM(cfg)
    losses = [train(m, panel, cfg, "cpu", end).epoch_loss for m in (a, b)]
    assert losses[0] == losses[1]
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
        assert x.dtype == torch.float32, name  # autocast computes in bfloat16, keeps float32


def test_bfloat16_trains_only_where_the_cpu_computes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    for native in (True, False):
        monkeypatch.setattr(network, "native_bfloat16", lambda native=native: native)
        chosen = network.training_precision(cpu, bfloat16=True)
        assert chosen == (Precision(torch.bfloat16) if native else Precision())
        assert network.training_precision(cpu, bfloat16=False) == Precision()
    cuda = network.training_precision(torch.device("cuda"), bfloat16=True)
    assert cuda == Precision(torch.float16, scaled=True)
    # a checkpoint from before the setting was trained in float32
    old = {k: v for k, v in SMALL.to_dict().items() if k != "bfloat16"}
    assert LSTMConfig.from_dict(old).bfloat16 is False


def test_the_cuda_path_trains_on_the_cpu(panel: Panel, monkeypatch: pytest.MonkeyPatch) -> None:
    """CUDA's path, gradients through the scaler, run where CI runs: a CPU has no float16
    LSTM (oneDNN refuses it), so under bfloat16 where it computes that, else float32. The
    scaler multiplies the loss by a power of two and divides the gradients back before they
    are clipped, so it must change nothing here: a step clipped on scaled gradients, or an
    update the scaler skipped, would."""
    half = torch.bfloat16 if network.native_bfloat16() else None
    cfg = replace(SMALL, epochs=2)
    end = panel.last_bucket + 1 - cfg.validation
    runs = {}
    for scaled in (False, True):
        monkeypatch.setattr(network, "training_precision", lambda *_, s=scaled: Precision(half, s))
        model = GlobalLSTM(cfg)
        runs[scaled] = train(model, panel, cfg, "cpu", end).epoch_loss, model.state_dict()
    (plain, plain_weights), (scaled_loss, scaled_weights) = runs[False], runs[True]
    assert np.isfinite(scaled_loss).all() and scaled_loss == plain
    for name, weights in plain_weights.items():
        assert torch.equal(weights, scaled_weights[name]), name


def test_forecasts_are_ordered_non_negative_and_zero_when_closed(panel: Panel) -> None:
    model = GlobalLSTM(SMALL)
    train(model, panel, SMALL, choose_device(DEVICE), panel.last_bucket + 1)
    ahead = close_of(int(panel.last_bucket), horizon=7, ahead_closed=[k == 3 for k in range(1, 8)])
    q = predict(model, panel, panel.last_bucket, ahead)
    assert q.shape == (len(panel.series), 7, 3)
    assert (q >= 0).all()
    assert (q[..., 0] <= q[..., 1]).all() and (q[..., 1] <= q[..., 2]).all()
    assert (q[:, 2] == 0).all()  # the third bucket ahead is closed
    assert (q[:, [0, 1, 3, 4, 5, 6], 2] > 0).mean() > 0.5


def test_the_calendar_ahead_defaults_to_the_panel_then_to_habit(panel: Panel) -> None:
    model = GlobalLSTM(SMALL)
    inside = np.flatnonzero(panel.closed)[-1] - 1  # the closed bucket is ahead of this origin
    q = predict(model, panel, panel.first_bucket + inside)
    assert (q[:, 0] == 0).all() and (q[:, 1] > 0).any()
    saturday = panel.weekday[-14:] == 5
    assert panel.closed[-14:][saturday].all()  # so the next Saturday is expected closed
    q = predict(model, panel, panel.last_bucket)
    next_saturday = (5 - panel.weekday[-1] - 1) % 7
    assert (q[:, next_saturday] == 0).all()


def test_windows_start_once_the_series_sells(panel: Panel) -> None:
    cfg = SMALL
    windows = training_windows(panel, panel.last_bucket + 1, cfg.seq_len, cfg.horizon)
    rows, origins = windows.T
    assert (panel.first_sale[rows] <= origins - cfg.seq_len // 2).all()
    assert (origins >= cfg.seq_len - 1).all() and (origins <= panel.demand.shape[1] - 2).all()
    late = rows[np.argmax(panel.first_sale[rows])]
    assert panel.first_sale[late] > cfg.seq_len
    assert origins[rows == late].min() >= panel.first_sale[late] + cfg.seq_len // 2


def synthetic(weeks: int, closed_slots: list[int]) -> Panel:
    """One series whose demand is its own bucket number, daily from a Monday."""
    width = 7 * weeks
    demand = np.arange(width, dtype=np.float32)[None]
    closed = np.zeros(width, bool)
    closed[closed_slots] = True
    demand[:, closed] = 0
    price = np.where(demand > 0, 2.0, np.nan).astype(np.float32)
    return Panel(["x@UK"], demand, price, closed, np.arange(width) % 7, 1000)


def test_seasonal_naive_skips_closed_weeks_back() -> None:
    panel = synthetic(12, [70, 63])
    naive = seasonal_naive(panel, np.array([0]), np.array([76]), 7)
    # targets 77..83: a week before is 70..76, but 70 and 63 were closed, so 56
    assert naive.tolist() == [[56.0, 71.0, 72.0, 73.0, 74.0, 75.0, 76.0]]


def test_validation_scores_every_open_target_once_per_horizon_with_a_stride_of_1() -> None:
    panel = synthetic(12, [80])
    pairs, scored = validation_points(panel, 14, 7, 1)
    width = panel.demand.shape[1]
    targets = pairs[:, 1:] + np.arange(1, 8)
    for k in range(7):
        assert sorted(targets[scored[:, k], k]) == [t for t in range(width - 14, width) if t != 80]


def test_validation_scores_every_open_target_once_with_a_stride_of_the_horizon() -> None:
    # nine series closed every Saturday, one of which starts selling 10 buckets from the end
    width, rng = 98, np.random.default_rng(0)
    demand = rng.poisson(2, (9, width)).astype(np.float32)
    closed = np.arange(width) % 7 == 5
    demand[:, closed] = 0
    demand[3, : width - 10], demand[3, width - 10] = 0, 5
    price = np.where(demand > 0, 2.0, np.nan).astype(np.float32)
    panel = Panel([f"s{i}@UK" for i in range(9)], demand, price, closed, np.arange(width) % 7, 0)

    def targets(stride: int) -> dict[int, list[int]]:
        pairs, scored = validation_points(panel, 28, 7, stride)
        at = pairs[:, 1:] + np.arange(1, 8)
        return {r: sorted(at[pairs[:, 0] == r][scored[pairs[:, 0] == r]]) for r in range(9)}

    weekly, daily = targets(7), targets(1)
    for row in range(9):  # the targets of every horizon, each once: the new series' too
        assert weekly[row] == sorted(set(daily[row]))
    assert len(weekly[3]) == len(set(daily[3])) > 0
    # every horizon is scored, the one on Saturday too: the series start at other offsets
    assert validation_points(panel, 28, 7, 7)[1].any(0).all()


def test_runs_on_the_cpu_without_cuda_packages(panel: Panel) -> None:
    device = choose_device("cpu")
    model = GlobalLSTM(LSTMConfig(seq_len=28, hidden=4, epochs=1, windows_per_epoch=256))
    report = train(model, panel, model.cfg, device, panel.last_bucket + 1)
    assert report.device == "cpu"
    assert next(model.parameters()).device.type == "cpu"
    assert predict(model, panel, panel.last_bucket - 7).shape == (len(panel.series), 7, 3)
    if torch.version.cuda is None:
        nvidia = sorted(
            name
            for d in importlib.metadata.distributions()
            if (name := d.metadata["Name"] or "").lower().startswith("nvidia-")
        )
        assert nvidia == [], "a CPU build of torch needs no CUDA wheels"
    if not torch.cuda.is_available():
        assert choose_device().type == "cpu"
