"""An externally trained model's forecasts, as the bank takes them."""

from __future__ import annotations

import numpy as np

from models.forecasters.injected import Injected
from models.testing import close_of


def test_a_row_offered_a_non_finite_forecast_is_not_ready() -> None:
    model = Injected("lstm")
    close = close_of(10, [1.0, 2.0, 3.0], horizon=2)
    model.offer("v1", np.array([[1.0, 2.0], [np.inf, 1.0], [np.nan, 1.0]]))
    means, ready = model.forecast(close, None)
    assert ready.tolist() == [True, False, False]
    assert means[0].tolist() == [1.0, 2.0] and np.isnan(means[1:]).all()
