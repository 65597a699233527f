"""An externally trained model's forecasts, as the bank takes them."""

from __future__ import annotations

import numpy as np
import pytest

from models.bank import LSTM, Bank
from models.forecasters.injected import Injected
from models.testing import close_of


def test_a_row_offered_a_non_finite_forecast_is_not_ready() -> None:
    model = Injected("lstm")
    close = close_of(10, [1.0, 2.0, 3.0], horizon=2)
    steps = np.array([[1.0, 2.0], [np.inf, 1.0], [np.nan, 1.0]])[..., None].repeat(4, axis=2)
    model.offer("v1", steps)
    means, ready = model.forecast(close, None)
    assert ready.tolist() == [True, False, False]
    assert means[0, :, 0].tolist() == [1.0, 2.0] and np.isnan(means[1:]).all()


def test_means_without_quantiles_are_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="with_mean"):
        Injected("lstm").offer("v1", np.array([[1.0, 2.0]]))


def test_the_seat_keeps_its_errors_moments_but_no_band_of_them() -> None:
    state = Bank.default(horizon=2).state()
    assert "bands.lstm.m2" in state and "bands.tsb.q" in state
    assert "bands.lstm.q" not in state and "bands.lstm.spread" not in state
    older = {**state, "bands.lstm.q": np.zeros((0, 2, 3), np.float32)}  # a band it once kept
    Bank.default(horizon=2).load(older, [])


def test_offered_quantiles_are_the_seats_own_in_order_and_zero_on_closed_days() -> None:
    bank = Bank.default(horizon=2)
    bank.align(["a@UK", "b@UK"])
    close = close_of(10, [1.0, 2.0], horizon=2, ahead_closed=[False, True])
    offered = np.array([
        [[2.9, 1.0, 2.0, 6.0], [3.0, 1.0, 2.0, 7.0]],
        [[1.0, 2.0, -1.0, 0.5], [np.inf, 0.0, 1.0, 2.0]],  # out of order; a diverged step
    ])  # fmt: skip
    bank.learn(close)
    bank.offer(LSTM, "v1", offered)
    steps = bank.forecast(close).steps[bank.names.index(LSTM)]
    assert steps[0].tolist() == [[2.9, 1.0, 2.0, 6.0], [0.0, 0.0, 0.0, 0.0]]
    assert np.isnan(steps[1]).all()  # a row with a non-finite step is not ready
    bank.offer(LSTM, "v1", offered[:1].repeat(2, axis=0) * [[[1, 1, 1, 1]], [[1, 2, -1, 1]]])
    sorted_row = bank.forecast(close).steps[bank.names.index(LSTM)][1, 0]
    assert sorted_row.tolist() == [2.9, 0.0, 2.0, 6.0]  # clipped at 0, then in order
