"""The champion LSTM inside a worker: hot-swapped from the registry, run in one batch per close.

At every bucket close the worker asks the registry for the champion (a pointer file read; the
weights load only when the pointer moved), so a version the trainer promotes is served from
the next close on, without a restart, and the swap is atomic: one close uses one version for
all its series. A champion that cannot be loaded (corrupt, incompatible) is refused with one
error line naming the file, and the previous version keeps serving.

The batch: the last ``seq_len`` buckets of every series of the partition from the bounded
histories in Redis (one pipelined read of the buckets since the last close,
``streamer.serving.window``), one forward pass in a worker thread so the event loop
keeps running, and its quantiles offered to the partition's bank as the ``lstm`` model, with a
mean read off them by Swanson's rule (0.3 p10 + 0.4 p50 + 0.3 p90): it is trained for
quantiles, and demand is skewed, so its median alone would understate the mean that reorder
points add up.
"""

from __future__ import annotations

import asyncio
import logging
import math

import numpy as np
import torch

from models.base import Close
from models.lstm.network import GlobalModel, Panel, predict
from models.lstm.registry import CheckpointError, Registry
from streamer import metrics
from streamer.eventtime.trading_calendar import TradingCalendar
from streamer.features.store import FeatureStore
from streamer.serving.window import WindowCache

__all__ = [
    "QUANTILES",
    "SWANSON",
    "LSTMServing",
    "version_name",
    "version_number",
    "window_of",
    "with_mean",
]

log = logging.getLogger(__name__)

QUANTILES = (0.1, 0.5, 0.9)
SWANSON = (0.3, 0.4, 0.3)  # weights of QUANTILES that estimate the mean


def with_mean(quantiles: np.ndarray) -> np.ndarray:
    """(mean, p10, p50, p90) ``[..., 4]`` from a global model's ``quantiles [..., 3]``, the
    mean by Swanson's rule, in float64 as the bank takes them.

    >>> with_mean(np.array([1.0, 2.0, 6.0])).tolist()
    [2.9, 1.0, 2.0, 6.0]
    """
    q = np.asarray(quantiles, np.float64)
    mean = np.tensordot(q, np.array(SWANSON), axes=([-1], [0]))
    return np.concatenate([mean[..., None], q], axis=-1)


def window_of(model: GlobalModel, bucket: int) -> range:
    """The buckets ``model`` reads to forecast after ``bucket`` closed."""
    return range(bucket - model.cfg.seq_len + 1, bucket + 1)


def version_name(version: int) -> str:
    return f"v{version}"


def version_number(name: str) -> int:
    """The version a name stands for.

    >>> version_number(version_name(3))
    3
    """
    return int(name.removeprefix("v"))


class LSTMServing:
    def __init__(self, registry: Registry, calendar: TradingCalendar, threads: int = 1) -> None:
        self.registry = registry
        self.calendar = calendar
        self.serving: tuple[int, GlobalModel] | None = None
        self._refused: int | None = None
        self.windows = WindowCache()
        torch.set_num_threads(threads)  # Settings.torch_threads

    def champion(self) -> tuple[int, GlobalModel] | None:
        """The version to serve at this close: the registry's champion, or the previous one
        while the champion cannot be loaded."""
        try:
            latest = self.registry.latest_champion()
        except CheckpointError as exc:
            return self._refuse(str(exc))
        if latest is not None and tuple(latest[1].cfg.quantiles) != QUANTILES:
            got = latest[1].cfg.quantiles
            return self._refuse(f"{version_name(latest[0])} forecasts {got}, not {QUANTILES}")
        if latest is not None and (self.serving is None or latest[0] != self.serving[0]):
            previous = "none" if self.serving is None else version_name(self.serving[0])
            log.info("serving LSTM %s (was %s)", version_name(latest[0]), previous)
            metrics.LSTM_SERVED_VERSION.set(latest[0])
            self.serving = latest
        return self.serving

    def _version(self, version: int) -> tuple[int, GlobalModel] | None:
        """A retried close's version: the one served, or loaded again from the registry."""
        if version == 0:
            return None
        if self.serving is not None and self.serving[0] == version:
            return self.serving
        try:
            return version, self.registry.load(version)
        except CheckpointError as exc:
            log.error("the retried close used LSTM %s, gone now (%s)", version_name(version), exc)
            return self.champion()

    def _refuse(self, reason: str) -> tuple[int, GlobalModel] | None:
        try:
            wanted = self.registry.champion()
        except CheckpointError:
            wanted = -1  # the pointer itself is unreadable
        if wanted != self._refused:  # one line per refused version, not one per close
            self._refused = wanted
            kept = "none" if self.serving is None else version_name(self.serving[0])
            log.error("refusing LSTM checkpoint: %s; still serving %s", reason, kept)
        return self.serving

    async def forecasts(
        self,
        store: FeatureStore,
        partition: int,
        series: list[str],
        closed: dict[int, bool],
        ahead: Close,
        pinned: int | None = None,
    ) -> tuple[str, np.ndarray] | None:
        """Mean forecasts ``[len(series), horizon]`` after ``ahead.bucket`` closed, by the
        champion (by version ``pinned`` when an earlier attempt at this close used it; 0:
        none), with its version name; None without one."""
        champion = self.champion() if pinned is None else self._version(pinned)
        if champion is None or not series:
            return None
        version, model = champion
        span = window_of(model, ahead.bucket)
        if model.cfg.signals:  # read whole: the signals' hashes are not kept between closes
            window = await store.read_window(partition, series, span, signals=True)
        else:
            window = await self.windows.read(store, partition, series, span)
        flags = {**window.closed, **closed}
        steps = await asyncio.to_thread(
            self.steps, model, series, window.demand, window.revenue, flags, span, ahead,
            window.signals,
        )  # fmt: skip
        return version_name(version), steps

    def steps(
        self,
        model: GlobalModel,
        series: list[str],
        demand: np.ndarray,
        revenue: np.ndarray,
        flags: dict[int, bool],
        span: range,
        ahead: Close,
        signals: np.ndarray | None = None,
    ) -> np.ndarray:
        """``model``'s (mean, p10, p50, p90) ``[len(series), horizon, 4]`` after
        ``ahead.bucket`` closed, from the series' demand and revenue over ``span``
        (``window_of``), the closed flags and the customer and promotion signals (when the
        model reads them): at a live close, and again when a restart replays it."""
        demand = demand.astype(np.float32)
        revenue = revenue.astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            price = np.where((demand > 0) & (revenue > 0), revenue / demand, math.nan)
        panel = Panel(
            list(series),
            demand,
            price.astype(np.float32),
            np.array([bool(flags.get(b)) for b in span]),
            np.array([self.calendar.weekday(b) for b in span]),
            span.start,
            None if signals is None else signals.astype(np.float32),
        )
        return with_mean(predict(model, panel, ahead.bucket, ahead))

    def versions(self, wanted: set[int]) -> dict[int, GlobalModel]:
        """The ``wanted`` versions that still load, for a restart to replay the closes that
        served them; one error line for each that does not (those closes replay without
        the LSTM, and the partition's forecasts then differ from an uninterrupted run's
        until the combination has forgotten them)."""
        out = {}
        for version in sorted(wanted):
            if self.serving is not None and self.serving[0] == version:
                out[version] = self.serving[1]
                continue
            try:
                out[version] = self.registry.load(version)
            except CheckpointError as exc:
                log.error("cannot replay LSTM %s (%s)", version_name(version), exc)
        return out
