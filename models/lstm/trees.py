"""Gradient-boosted trees over lag, rolling, calendar and price features: the M5 winners'
recipe (LightGBM, Tweedie objective), served through the same path as the networks.

One row per (window, horizon step): the window is scaled as the networks scale it (by the
mean of its open buckets plus ``EPS``), and the target is the scaled demand of that step. The
booster learns the scaled *mean* with a Tweedie objective, the usual choice for demand with
many zeros and a long tail. Quantiles come from the errors of that mean on rows held out of
the boosting (the last ``CALIBRATION`` share of the drawn windows): the rows are cut into
``BINS`` bins by the predicted mean, and each bin keeps the p10/p50/p90 of the ratio of truth
to prediction, so a forecast's quantiles are its mean times its bin's ratios, monotone and
calibrated on data the trees did not fit.

The weights file is JSON: LightGBM's own text model and the bins, never pickle.

>>> import numpy as np
>>> from models.lstm.kinds import Architecture
>>> from models.lstm.network import LSTMConfig, Panel, predict
>>> cfg = LSTMConfig(seq_len=14, epochs=1, windows_per_epoch=64, arch=Architecture.LIGHTGBM)
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
from typing import ClassVar

import lightgbm
import numpy as np
import torch

from models.base import SEASON
from models.lstm.network import (
    EPS,
    GlobalModel,
    Inputs,
    LSTMConfig,
    Panel,
    TrainReport,
    inputs_of,
    training_windows,
    window_targets,
)

__all__ = ["BINS", "CALIBRATION", "LAGS", "PARAMS", "ROUNDS", "GradientBoostedTrees", "features"]

LAGS = 14  # scaled demand of the last two weeks, one feature each
ROUNDS = 300  # boosting rounds at most; early stopping on the held-out rows
BINS = 32  # of the predicted mean, each with its own ratio quantiles
CALIBRATION = 0.2  # share of the drawn windows held out of the boosting
PARAMS = {
    "objective": "tweedie",
    "tweedie_variance_power": 1.3,  # between Poisson (1) and Gamma (2): zeros and a long tail
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


def _scaled(inputs: Inputs) -> tuple[np.ndarray, np.ndarray]:
    """The windows' demand divided by their scale, NaN where closed, and the scale [B]."""
    is_open = ~inputs.closed
    scale = (inputs.demand * is_open).sum(1) / np.maximum(is_open.sum(1), 1) + EPS
    return np.where(is_open, inputs.demand / scale[:, None], np.nan), scale


def features(inputs: Inputs) -> np.ndarray:
    """Rows [B * H, F], window-major: the window's own features, then the step's.

    Window: the last ``LAGS`` scaled buckets, means over 7 and 28 buckets, the share of open
    buckets that sold, buckets since the last sale, the level (log1p of the scale), the log
    price of the last week against the window's mean price and the share of buckets with no
    price. Step: its horizon, weekday and closed flag, the scaled demand of the same weekday
    one to four weeks before it and that weekday's mean over the window.
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
        ])  # fmt: skip
        steps = np.arange(1, horizon + 1)
        same_day = [
            scaled[:, length - 1 + steps - weeks * SEASON] for weeks in range(1, 5)
        ]  # each [B, H]; the window is at least 4 weeks long
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
    """A LightGBM booster of the scaled mean with ratio quantiles per bin (module docstring)."""

    locations: ClassVar[int] = 0
    suffix: ClassVar[str] = ".trees.json"

    def __init__(self, cfg: LSTMConfig) -> None:
        self.cfg = cfg
        self.booster: lightgbm.Booster | None = None
        self.edges = np.zeros(0)  # [BINS - 1] cut points of the predicted scaled mean
        self.ratios = np.ones((1, len(cfg.quantiles)))  # [bins, Q] truth / predicted mean

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
        cut = max(1, int(n * (1 - CALIBRATION)))
        end_col = end - panel.first_bucket
        fit_x, fit_y = self._rows(panel, draw[:cut], end_col)
        cal_x, cal_y = self._rows(panel, draw[cut:], end_col)
        params = {**PARAMS, "seed": cfg.seed, "num_threads": torch.get_num_threads()}
        train_set = lightgbm.Dataset(fit_x, fit_y, free_raw_data=True)
        valid = [lightgbm.Dataset(cal_x, cal_y, reference=train_set)] if len(cal_y) else []
        losses: dict[str, dict[str, list[float]]] = {}
        callbacks = [lightgbm.record_evaluation(losses)]
        if valid:
            callbacks.append(lightgbm.early_stopping(30, verbose=False))
        self.booster = lightgbm.train(params, train_set, ROUNDS, valid, callbacks=callbacks)
        self._calibrate(cal_x if len(cal_y) else fit_x, cal_y if len(cal_y) else fit_y)
        # the held-out rows' Tweedie deviance after each round
        curve = next(iter(losses["valid_0"].values())) if valid else [math.nan]
        if on_epoch is not None:
            on_epoch(1, curve[-1])
        seconds = time.perf_counter() - started
        return TrainReport([curve[-1]], [seconds], len(windows), seconds, "cpu")

    def _rows(self, panel: Panel, draw: np.ndarray, end_col: int) -> tuple[np.ndarray, np.ndarray]:
        """Features and scaled targets of the learned (open, in range) steps of ``draw``."""
        rows, origins = draw.T
        inputs = inputs_of(self, panel, rows, origins)
        y, learned = window_targets(panel, rows, origins, end_col, self.cfg.horizon)
        _, scale = _scaled(inputs)
        keep = learned.reshape(-1)
        return features(inputs)[keep], (y / scale[:, None]).reshape(-1)[keep]

    def _calibrate(self, x: np.ndarray, y: np.ndarray) -> None:
        """Bins of the predicted mean and each bin's quantiles of truth / prediction."""
        mean = np.maximum(self._mean(x), 1e-6)
        self.edges = np.unique(np.quantile(mean, np.linspace(0, 1, BINS + 1)[1:-1]))
        bins = np.searchsorted(self.edges, mean, side="right")
        levels = np.array(self.cfg.quantiles)
        overall = np.quantile(y / mean, levels)
        self.ratios = np.stack([
            np.quantile(y[bins == k] / mean[bins == k], levels) if (bins == k).any() else overall
            for k in range(len(self.edges) + 1)
        ])  # fmt: skip

    def _mean(self, x: np.ndarray) -> np.ndarray:
        if self.booster is None:
            return np.zeros(len(x))
        return np.asarray(self.booster.predict(x, num_threads=torch.get_num_threads()))

    def forecast(self, inputs: Inputs) -> np.ndarray:
        b, horizon = inputs.closed_ahead.shape
        if b == 0:
            return np.zeros((0, horizon, len(self.cfg.quantiles)))
        mean = self._mean(features(inputs))
        ratios = self.ratios[np.searchsorted(self.edges, mean, side="right")]
        _, scale = _scaled(inputs)
        q = (mean[:, None] * ratios).reshape(b, horizon, -1) * scale[:, None, None]
        q = np.maximum.accumulate(np.maximum(q, 0.0), axis=2)
        q[inputs.closed_ahead] = 0.0
        return q

    def warm_from(self, other: GlobalModel) -> bool:
        return False  # a few hundred trees train from scratch in seconds

    def weights(self) -> bytes:
        if self.booster is None:
            raise ValueError("untrained trees have no weights")
        return json.dumps({
            "booster": self.booster.model_to_string(),
            "edges": self.edges.tolist(),
            "ratios": self.ratios.tolist(),
        }).encode()  # fmt: skip

    def load_weights(self, data: bytes, map_location: torch.device) -> None:
        try:
            state = json.loads(data)
            self.booster = lightgbm.Booster(model_str=state["booster"])
            self.edges = np.asarray(state["edges"], np.float64)
            self.ratios = np.asarray(state["ratios"], np.float64)
        except (ValueError, KeyError, TypeError, lightgbm.basic.LightGBMError) as exc:
            raise ValueError(f"unreadable weights: not a trees checkpoint: {exc}") from exc
        if self.ratios.shape != (len(self.edges) + 1, len(self.cfg.quantiles)):
            raise ValueError(
                f"incompatible shapes for its config: ratios {self.ratios.shape} for "
                f"{len(self.edges)} edges and {len(self.cfg.quantiles)} quantiles"
            )

    def place(self, device: torch.device | str) -> GradientBoostedTrees:
        return self  # LightGBM runs on the CPU
