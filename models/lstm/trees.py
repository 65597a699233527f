"""Gradient-boosted trees over lag, rolling, calendar and price features: the M5 winners'
recipe (LightGBM, Tweedie objective), served through the same path as the networks.

One row per (window, horizon step): the window is scaled as the networks scale it (by the
mean of its open buckets plus ``EPS``), and the target is the scaled demand of that step. A
first booster learns the scaled *mean* with a Tweedie objective, the usual choice for demand
with many zeros and a long tail; one booster per quantile then learns that quantile with the
quantile (pinball) objective from the same features and the log of the mean (stacking: the
mean is the strongest single feature, and a quantile is not a fixed multiple of it on
intermittent demand). The quantiles are sorted, so they never cross. Every booster stops
early on rows held out of the boosting (the last ``HELD_OUT`` share of the drawn windows).

The weights file is JSON: LightGBM's own text models, never pickle.

>>> import numpy as np
>>> from models.lstm.kinds import Architecture
>>> from models.lstm.network import LSTMConfig, Panel, predict
>>> cfg = LSTMConfig(seq_len=28, epochs=1, windows_per_epoch=64, arch=Architecture.LIGHTGBM)
>>> rng = np.random.default_rng(0)
>>> panel = Panel(["a@UK", "b@UK"], rng.poisson(3, (2, 60)).astype(np.float32),
...               np.full((2, 60), 1.5, np.float32), np.zeros(60, bool), np.arange(60) % 7, 100)
>>> trees = GradientBoostedTrees(cfg)
>>> _ = trees.fit(panel, cfg, "cpu", end=150, on_epoch=None)
>>> q = predict(trees, panel, at_bucket=159)
>>> q.shape, bool((np.diff(q, axis=2) >= 0).all())
((2, 7, 3), True)
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from models.base import SEASON
from models.lstm.network import (
    GlobalModel,
    Inputs,
    LSTMConfig,
    Panel,
    TrainReport,
    inputs_of,
    training_windows,
    window_scale,
    window_targets,
)

if TYPE_CHECKING:
    import lightgbm

__all__ = [
    "HELD_OUT", "LAGS", "MEAN", "PARAMS", "ROUNDS", "WEEKS", "GradientBoostedTrees", "features",
]  # fmt: skip

LAGS = 14  # scaled demand of the last two weeks, one feature each
WEEKS = 4  # the same weekday this many weeks back, one feature each
ROUNDS = 300  # boosting rounds at most per booster; early stopping on the held-out rows
HELD_OUT = 0.2  # share of the drawn windows held out of the boosting
MEAN = {
    "objective": "tweedie",
    "tweedie_variance_power": 1.3,  # between Poisson (1) and Gamma (2): zeros and a long tail
}
PARAMS = {
    "learning_rate": 0.05,
    "num_leaves": 63,
    "min_data_in_leaf": 200,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "deterministic": True,
    "force_row_wise": True,
    "verbosity": -1,
}


def _lightgbm() -> Any:
    """LightGBM, imported when the trees are used: a worker that serves a network never loads
    it, and a machine without its OpenMP runtime fails here with the fix, not at start-up."""
    try:
        import lightgbm
    except (ImportError, OSError) as exc:  # OSError: libgomp.so.1 missing
        raise RuntimeError(
            f"the lightgbm architecture needs LightGBM and the OpenMP runtime ({exc}): "
            "pip install lightgbm, and on Debian or Ubuntu apt-get install libgomp1"
        ) from exc
    return lightgbm


def _scaled(inputs: Inputs) -> tuple[np.ndarray, np.ndarray]:
    """The windows' demand divided by their scale, NaN where closed, and the scale [B]."""
    is_open = ~inputs.closed
    scale = window_scale(inputs.demand, is_open)
    return np.where(is_open, inputs.demand / scale[:, None], np.nan), scale


def features(inputs: Inputs) -> np.ndarray:
    """Rows [B * H, F], window-major: the window's own features, then the step's.

    Window: the last ``LAGS`` scaled buckets, means over 7 and 28 buckets, the share of open
    buckets that sold, buckets since the last sale, the level (log1p of the scale), the log
    price of the last week against the window's mean price and the share of buckets with no
    price; with the signals (``LSTMConfig.signals``), each signal's mean over 7 and over 28
    buckets (``signal_steps``). Step: its horizon, weekday and closed flag, the scaled demand
    of the same weekday one to four weeks before it and that weekday's mean over the window.
    """
    scaled, scale = _scaled(inputs)
    b, length = scaled.shape
    horizon = inputs.closed_ahead.shape[1]
    # nanmean of a window closed all week is NaN, on purpose: LightGBM reads NaN as missing
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sold = np.nan_to_num(scaled) > 0
        last_sale = np.where(sold, np.arange(length), -1).max(1)
        since = np.where(last_sale >= 0, length - 1 - last_sale, length)
        mean_price = np.nanmean(inputs.price, 1)
        recent_price = np.nanmean(inputs.price[:, -SEASON:], 1)
        window = np.column_stack([
            scaled[:, -LAGS:],
            np.nanmean(scaled[:, -SEASON:], 1),
            np.nanmean(scaled[:, -4 * SEASON :], 1),
            sold.sum(1) / np.maximum((~inputs.closed).sum(1), 1),
            since,
            np.log1p(scale),
            np.log(recent_price / mean_price),
            np.isnan(inputs.price).mean(1),
            inputs.signals[:, -SEASON:].mean(1),
            inputs.signals[:, -4 * SEASON :].mean(1),
        ])  # fmt: skip
        steps = np.arange(1, horizon + 1)
        same_day = [
            scaled[:, length - 1 + steps - weeks * SEASON] for weeks in range(1, WEEKS + 1)
        ]  # each [B, H]; the window is at least WEEKS weeks long
        weekday_mean = np.stack(
            [np.nanmean(scaled[:, length - 1 + h - SEASON :: -SEASON], 1) for h in steps], 1
        )
    step = np.stack(
        [
            np.broadcast_to(steps, (b, horizon)),
            inputs.weekday_ahead,
            inputs.closed_ahead,
            *same_day,
            weekday_mean,
        ],
        2,
    ).astype(np.float32)
    rows = np.concatenate([np.repeat(window[:, None, :], horizon, 1), step], 2)
    return rows.reshape(b * horizon, -1).astype(np.float32)


class GradientBoostedTrees:
    """A LightGBM booster of the scaled mean and one per quantile on top (module docstring)."""

    locations: ClassVar[int] = 0
    suffix: ClassVar[str] = ".trees.json"

    def __init__(self, cfg: LSTMConfig) -> None:
        if cfg.seq_len < WEEKS * SEASON:
            raise ValueError(f"the trees read {WEEKS} weeks back: seq_len >= {WEEKS * SEASON}")
        self.cfg = cfg
        self.mean: lightgbm.Booster | None = None
        self.quantiles: list[lightgbm.Booster] = []

    def fit(
        self,
        panel: Panel,
        cfg: LSTMConfig,
        device: torch.device | str,
        end: int,
        on_epoch: Callable[[int, float], None] | None,
    ) -> TrainReport:
        started = time.perf_counter()
        windows = training_windows(panel, end, cfg.seq_len, cfg.horizon)
        if len(windows) == 0:
            raise ValueError(f"no training window ends before bucket {end}")
        rng = np.random.default_rng(cfg.seed)
        n = min(cfg.windows_per_epoch or len(windows), len(windows))
        draw = windows[rng.choice(len(windows), n, replace=False)]
        cut = max(1, int(n * (1 - HELD_OUT)))
        end_col = end - panel.first_bucket
        fit_x, fit_y = self._rows(panel, draw[:cut], end_col)
        held_x, held_y = self._rows(panel, draw[cut:], end_col)
        losses = []
        self.mean, loss = _boost(MEAN, cfg.seed, fit_x, fit_y, held_x, held_y)
        losses.append(loss)
        fit_x, held_x = self._stack(fit_x), self._stack(held_x)
        self.quantiles = []
        for level in self.cfg.quantiles:
            params = {"objective": "quantile", "alpha": level}
            booster, loss = _boost(params, cfg.seed, fit_x, fit_y, held_x, held_y)
            self.quantiles.append(booster)
            losses.append(loss)
            if on_epoch is not None:
                on_epoch(len(losses), loss)
        seconds = time.perf_counter() - started
        return TrainReport(
            losses, [seconds / len(losses)] * len(losses), len(windows), seconds, "cpu"
        )

    def _rows(self, panel: Panel, draw: np.ndarray, end_col: int) -> tuple[np.ndarray, np.ndarray]:
        """Features and scaled targets of the learned (open, in range) steps of ``draw``."""
        rows, origins = draw.T
        inputs = inputs_of(self, panel, rows, origins)
        y, learned = window_targets(panel, rows, origins, end_col, self.cfg.horizon)
        _, scale = _scaled(inputs)
        keep = learned.reshape(-1)
        return features(inputs)[keep], (y / scale[:, None]).reshape(-1)[keep]

    def _stack(self, x: np.ndarray) -> np.ndarray:
        """The features with the log of the predicted mean, as the quantile boosters read them."""
        mean = np.zeros(len(x)) if self.mean is None else _predict(self.mean, x)
        return np.column_stack([x, np.log(np.maximum(mean, 1e-6))]).astype(np.float32)

    def forecast(self, inputs: Inputs) -> np.ndarray:
        b, horizon = inputs.closed_ahead.shape
        levels = len(self.cfg.quantiles)
        if b == 0 or not self.quantiles:
            return np.zeros((b, horizon, levels))
        x = self._stack(features(inputs))
        q = np.stack([_predict(booster, x) for booster in self.quantiles], 1)
        _, scale = _scaled(inputs)
        q = np.sort(np.maximum(q, 0.0), axis=1).reshape(b, horizon, levels) * scale[:, None, None]
        q[inputs.closed_ahead] = 0.0
        return q

    def warm_from(self, other: GlobalModel) -> bool:
        return False  # a few hundred trees train from scratch in seconds

    def weights(self) -> bytes:
        if self.mean is None:
            raise ValueError("untrained trees have no weights")
        return json.dumps({
            "mean": self.mean.model_to_string(),
            "quantiles": [b.model_to_string() for b in self.quantiles],
        }).encode()  # fmt: skip

    def load_weights(self, data: bytes, map_location: torch.device) -> None:
        try:
            lgb = _lightgbm()
        except RuntimeError as exc:  # the registry refuses the checkpoint, and says why
            raise ValueError(str(exc)) from exc
        try:
            state = json.loads(data)
            self.mean = lgb.Booster(model_str=state["mean"])
            self.quantiles = [lgb.Booster(model_str=m) for m in state["quantiles"]]
        except (ValueError, KeyError, TypeError, lgb.basic.LightGBMError) as exc:
            raise ValueError(f"unreadable weights: not a trees checkpoint: {exc}") from exc
        if len(self.quantiles) != len(self.cfg.quantiles):
            raise ValueError(
                f"incompatible shapes for its config: {len(self.quantiles)} quantile boosters "
                f"for {len(self.cfg.quantiles)} quantiles"
            )

    def place(self, device: torch.device | str) -> GradientBoostedTrees:
        return self  # LightGBM runs on the CPU


def _boost(
    objective: dict[str, object],
    seed: int,
    x: np.ndarray,
    y: np.ndarray,
    held_x: np.ndarray,
    held_y: np.ndarray,
) -> tuple[lightgbm.Booster, float]:
    """A booster of ``objective``, stopped early on the held-out rows when there are some;
    and its last loss on them (NaN without)."""
    lgb = _lightgbm()
    params = {**PARAMS, **objective, "seed": seed, "num_threads": torch.get_num_threads()}
    train_set = lgb.Dataset(x, y, free_raw_data=True)
    losses: dict[str, dict[str, list[float]]] = {}
    callbacks = [lgb.record_evaluation(losses)]
    valid = []
    if len(held_y):
        valid = [lgb.Dataset(held_x, held_y, reference=train_set)]
        callbacks.append(lgb.early_stopping(30, verbose=False))
    booster = lgb.train(params, train_set, ROUNDS, valid, callbacks=callbacks)
    curve = next(iter(losses["valid_0"].values())) if valid else [math.nan]
    return booster, float(
        curve[booster.best_iteration - 1] if booster.best_iteration else curve[-1]
    )


def _predict(booster: lightgbm.Booster, x: np.ndarray) -> np.ndarray:
    return np.asarray(booster.predict(x, num_threads=torch.get_num_threads()), np.float64)
