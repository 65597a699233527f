"""A public testing harness for models: closes built by hand, and the conformance checks
every model must pass (like river's ``checks``), run over all models by tests/models."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from models.base import SEASON, Close, Forecaster
from models.recent import Recent

__all__ = ["check_model", "close_of", "demand"]


def close_of(
    bucket: int,
    y: list[float] | np.ndarray | None = None,
    *,
    is_open: bool = True,
    horizon: int = 7,
    price: list[float] | np.ndarray | None = None,
    ahead_closed: list[bool] | None = None,
) -> Close:
    """The close of ``bucket`` with demand ``y`` (one value per row); weekdays count from a
    Monday at bucket 0."""
    ys = np.asarray([0.0] if y is None else y, dtype=np.float64)
    prices = np.full(len(ys), np.nan) if price is None else np.asarray(price, np.float64)
    return Close(
        bucket,
        is_open,
        ys,
        prices,
        bucket % 7,
        (bucket + 1 + np.arange(horizon)) % 7,
        np.zeros(horizon, bool) if ahead_closed is None else np.asarray(ahead_closed, bool),
    )


def _run(model: Forecaster, features: Recent, closes: list[Close]) -> tuple[np.ndarray, np.ndarray]:
    means, ready = np.empty(0), np.empty(0, bool)
    for c in closes:
        model.learn(c, features)
        features.update(c.bucket, c.open, c.y, c.price)
        means, ready = model.forecast(c, features)
    return means, ready


def demand(rows: int, buckets: int, seed: int = 0) -> list[Close]:
    """Intermittent weekly-seasonal demand for ``rows`` series, every 6th bucket closed."""
    rng = np.random.default_rng(seed)
    level = rng.gamma(1.0, 3.0, rows)
    out = []
    for b in range(buckets):
        y = rng.poisson(level * (1.5 if b % 7 == 2 else 1.0)) * (rng.random(rows) < 0.6)
        out.append(close_of(b, y.astype(float), is_open=b % 6 != 5, price=rng.random(rows) + 1))
    return out


def check_model(make: Callable[[], Forecaster], season: int = SEASON) -> None:
    """Every model's contract, as river's ``utils.estimator_checks`` checks estimators:

    * nothing is ready before it has learned anything;
    * forecasts have one row per series and ``horizon`` steps (each a mean, or (mean, p10,
      p50, p90) for a model with ``own_quantiles``), finite and >= 0 where ready, NaN where
      not;
    * a closed bucket teaches nothing: a model that saw only closed buckets (of high demand)
      is not ready, as a fresh one;
    * ``state()`` -> ``load()`` gives identical forecasts, and rows can be added.
    """
    rows, closes = 5, demand(5, 40)
    model, features = make(), Recent(season)
    for part in (model, features):
        part.take(np.full(rows, -1))
    means, ready = model.forecast(closes[0], features)
    shape = (rows, closes[0].horizon, *((4,) if model.own_quantiles else ()))
    assert means.shape == shape and not ready.any(), "ready before learning"
    assert np.isnan(means).all(), "a forecast before learning"

    idle, idle_features = make(), Recent(season)
    for part in (idle, idle_features):
        part.take(np.full(rows, -1))
    shut = [close_of(b, np.full(rows, 99.0), is_open=False) for b in range(30)]
    _, ready = _run(idle, idle_features, shut)
    assert not ready.any(), "learned from closed buckets"

    means, ready = _run(model, features, closes[:30])
    if model.name != "lstm":
        assert ready.all(), "not ready after 30 buckets"
    assert np.all(np.isfinite(means[ready])) and np.all(means[ready] >= 0)
    assert np.isnan(means[~ready]).all()

    copy, copy_features = make(), Recent(season)
    copy.load(model.state())
    copy_features.load(features.state())
    index = np.concatenate([np.arange(rows), [-1]])  # one more series joins
    for m, f in ((model, features), (copy, copy_features)):
        m.take(index)
        f.take(index)
    rest = [close_of(c.bucket, np.append(c.y, 1.0), is_open=c.open, price=np.append(c.price, 2))
            for c in closes[30:]]  # fmt: skip
    a, ready_a = _run(model, features, rest)
    b, ready_b = _run(copy, copy_features, rest)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ready_a, ready_b)
