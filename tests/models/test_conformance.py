"""The conformance suite: every model of the bank passes the same checks."""

from __future__ import annotations

import numpy as np
import pytest

from models.bank import Bank
from models.base import Forecaster
from models.testing import check_model, close_of, demand

MODELS = Bank.default().models


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_every_model_keeps_the_contract(model: Forecaster) -> None:
    make = type(model) if model.name != "lstm" else lambda: type(model)("lstm")
    check_model(make)


def test_an_injected_model_forecasts_what_it_was_offered_once() -> None:
    bank = Bank.default(horizon=2)
    bank.align(["a@UK"])
    c = close_of(0, [1.0], horizon=2)
    bank.learn(c)
    bank.offer("lstm", "v1", np.array([[[3.0, 1.0, 2.0, 6.0], [4.0, 1.0, 3.0, 8.0]]]))
    first = bank.forecast(c)
    lstm = bank.names.index("lstm")
    assert first.steps[lstm][0, :, 0].tolist() == [3.0, 4.0]
    assert np.isnan(bank.forecast(c).steps[lstm]).all()


def test_model_names_are_unique_and_the_fallback_is_one_of_them() -> None:
    models = Bank.default().models
    with pytest.raises(ValueError, match="unique"):
        Bank([*models, models[0]], "seasonal_naive")
    with pytest.raises(ValueError, match="fallback"):
        Bank(models, "nope")


def test_the_demand_helper_closes_some_buckets() -> None:
    assert {c.open for c in demand(2, 12)} == {True, False}
