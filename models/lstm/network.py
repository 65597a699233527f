"""Global LSTM forecaster: one torch model over all series, quantiles by pinball loss.

Every series is a row of a ``Panel`` (daily buckets, one column per bucket). A training or
forecast *window* of a series ends at an origin bucket ``o`` (the bucket that just closed): its
inputs are the ``seq_len`` buckets up to ``o``, its targets the ``horizon`` buckets after it,
whose calendar (weekday, closed) is known when the forecast is made.

Scaling: each window is divided by the mean demand of its open input buckets plus ``EPS``, so
one set of weights serves a series selling 2 units a week and one selling 2,000 a day; the
outputs are multiplied back. The level itself (log1p of that mean) is an input too, since
small intermittent series do not behave like big smooth ones.

Closed buckets (docs/forecasting.md) are not zero demand: they are flagged in the inputs,
never targets of the loss, never scored by ``validate``, and forecast as 0.

The quantiles are monotone by construction: the first is free, each next one adds a softplus.

>>> cfg = LSTMConfig(seq_len=14, hidden=4, epochs=1)
>>> LSTMConfig.from_dict(cfg.to_dict()) == cfg
True
>>> rng = np.random.default_rng(0)
>>> panel = Panel(["a@UK", "b@UK"], rng.poisson(3, (2, 30)).astype(np.float32),
...               np.full((2, 30), 1.5, np.float32), np.zeros(30, bool), np.arange(30) % 7, 100)
>>> model = GlobalLSTM(cfg)
>>> q = predict(model, panel, at_bucket=120)
>>> q.shape, bool((np.diff(q, axis=2) >= 0).all())
((2, 7, 3), True)
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from typing import Any, ClassVar, NamedTuple, Protocol

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from models.base import SEASON, Close
from models.lstm.kinds import Architecture
from models.series import is_rollup, sku_of
from models.signals import SIGNALS

__all__ = [
    "ACTIVE_BUCKETS",
    "ARCH",
    "EPS",
    "INFERENCE_CHUNK",
    "NAIVE_WEEKS",
    "N_AHEAD",
    "N_INPUTS",
    "SHAPE",
    "GlobalLSTM",
    "GlobalModel",
    "Inputs",
    "LSTMConfig",
    "Panel",
    "Precision",
    "TorchForecaster",
    "TrainReport",
    "Validation",
    "choose_device",
    "forecast_windows",
    "gather",
    "inputs_of",
    "pinball",
    "predict",
    "seasonal_naive",
    "shape_of",
    "sold_within",
    "train",
    "training_precision",
    "training_windows",
    "validate",
    "validation_points",
    "window_scale",
    "window_targets",
]

# Bump when the inputs or the layers change: checkpoints of another architecture are refused.
ARCH = 1
EPS = 0.1  # units: keeps the scale of a window with one small sale away from zero
ACTIVE_BUCKETS = 56  # as the worker (SHELFCAST_ACTIVE_BUCKETS): quieter series are not forecast
NAIVE_WEEKS = 4  # how far back the seasonal naive looks for an open bucket of the same weekday
N_INPUTS = 12  # scaled demand, closed, 7 weekdays, relative log price, price missing, level
N_AHEAD = 8  # per future bucket: 7 weekdays, closed
INFERENCE_CHUNK = 16_384  # windows per forward pass: bounds memory, not speed


@dataclass(frozen=True)
class LSTMConfig:
    """Architecture and training settings of a global model; stored in every checkpoint's
    metadata. ``arch`` names the model; the rest are the LSTM's sizes (the other architectures
    keep its window, horizon, quantiles and training budget).

    The defaults keep a full-year refresh of ~19,600 series within two minutes on 2 CPU cores
    (docs/lstm.md): an epoch is a fresh random draw of ``windows_per_epoch`` windows, not a
    pass over all of them (1.6 million), because most windows of a slow series teach the same
    thing and time, not data, is the limit: 12 draws see about as many windows as one pass.
    """

    seq_len: int = 56  # input buckets: 8 weeks, the worker's activity window
    hidden: int = 32  # LSTM units: 16 validates worse, 64 no better for 3x the training
    layers: int = 1
    dropout: float = 0.0  # on the last hidden state (and between layers when layers > 1)
    horizon: int = 7
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
    epochs: int = 12
    # epochs of a candidate that starts from the champion's weights: it only has to learn the
    # buckets since, and a full-year backtest refreshes 14 times; two scored as well as three
    # for a quarter less training (docs/lstm.md)
    warm_epochs: int = 2
    windows_per_epoch: int | None = 131_072  # None: every eligible window each epoch
    batch_size: int = 256
    lr: float = 3e-3  # Adam
    validation: int = 28  # last buckets held out to validate (and never trained on)
    # buckets between a series' validation origins (docs/lstm.md, Validation): None, the
    # horizon, scores each target once; 1 at every horizon, for 7 times the forecasts
    validation_stride: int | None = None
    seed: int = 0
    arch: Architecture = Architecture.LSTM
    signals: bool = False  # read the customer and promotion signals (models.signals)
    # train under bfloat16 autocast on a CPU that computes it natively (AVX512-BF16):
    # measured: its forward and backward passes 1.7x faster, a refresh 13-27%, at the same
    # validation MAE (docs/lstm.md)
    bfloat16: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "arch", Architecture(self.arch))
        qs = self.quantiles
        if list(qs) != sorted(set(qs)) or not all(0 < q < 1 for q in qs) or 0.5 not in qs:
            raise ValueError(f"quantiles {qs}: increasing, in (0, 1), with 0.5")
        if min(self.seq_len, self.hidden, self.layers, self.horizon, self.epochs) < 1:
            raise ValueError("seq_len, hidden, layers, horizon and epochs must be >= 1")
        if self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"batch_size {self.batch_size} must be >= 1 and lr {self.lr} > 0")
        if self.validation_stride is not None and not 1 <= self.validation_stride <= self.horizon:
            raise ValueError(f"validation_stride must be within 1..horizon ({self.horizon})")
        if self.warm_epochs < 0:
            raise ValueError("warm_epochs must be >= 0 (0: always train from scratch)")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["quantiles"] = list(self.quantiles)
        d["arch"] = self.arch.value
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LSTMConfig:
        """The config of ``to_dict``; unknown or missing keys are an error, not a default,
        except ``arch``, ``signals``, ``validation_stride`` and ``bfloat16``: checkpoints
        from before them are LSTMs that read no signals, validated at every origin and
        trained in float32."""
        d = {
            "arch": Architecture.LSTM.value, "signals": False, "validation_stride": 1,
            "bfloat16": False, **d,
        }  # fmt: skip
        names = {f.name for f in fields(cls)}
        if set(d) != names:
            raise ValueError(
                f"config keys differ: unknown {sorted(set(d) - names)}, "
                f"missing {sorted(names - set(d))}"
            )
        return cls(**{**d, "quantiles": tuple(d["quantiles"])})

    @property
    def validation_every(self) -> int:
        """Buckets between a series' validation origins: ``validation_stride``, or the
        horizon."""
        return self.validation_stride or self.horizon

    @property
    def median(self) -> int:
        """Index of the p50 among the quantiles."""
        return self.quantiles.index(0.5)


@dataclass(eq=False)
class Panel:
    """All series over consecutive buckets, as arrays; column ``t`` is bucket
    ``first_bucket + t``."""

    series: list[str]  # "sku@location"
    demand: np.ndarray  # float32 [S, T], units; 0 where nothing sold
    price: np.ndarray  # float32 [S, T], mean unit price sold; NaN where nothing sold
    closed: np.ndarray  # bool [T], shared by all series
    weekday: np.ndarray  # int [T], 0 = Monday
    first_bucket: int
    # float32 [S, T, len(SIGNALS)]: customer and promotion signals (models.signals); None
    # where they are not known, read as zeros
    signals: np.ndarray | None = None

    def __post_init__(self) -> None:
        s, t = self.demand.shape
        if (
            len(self.series) != s
            or self.price.shape != (s, t)
            or self.closed.shape != (t,)
            or self.weekday.shape != (t,)
            or (self.signals is not None and self.signals.shape != (s, t, len(SIGNALS)))
        ):
            raise ValueError(f"panel arrays disagree with {s} series x {t} buckets")

    def columns(self, lo: int, hi: int) -> Panel:
        """Buckets ``first_bucket + lo`` to ``first_bucket + hi - 1`` of every series."""
        return Panel(
            self.series,
            self.demand[:, lo:hi],
            self.price[:, lo:hi],
            self.closed[lo:hi],
            self.weekday[lo:hi],
            self.first_bucket + lo,
            None if self.signals is None else self.signals[:, lo:hi],
        )

    @property
    def last_bucket(self) -> int:
        return self.first_bucket + self.demand.shape[1] - 1

    @cached_property
    def first_sale(self) -> np.ndarray:
        """Column of each series' first sale (the width of the panel when none)."""
        sold = self.demand > 0
        return np.where(sold.any(1), sold.argmax(1), sold.shape[1])

    @cached_property
    def siblings(self) -> np.ndarray:
        """Rows [S, M] of every other location of each series' SKU, -1 where it has fewer than
        the most (M); a SKU's rollup is nobody's sibling (it sums them). The order says
        nothing: ``gather`` picks the busiest within each window.

        >>> p = Panel(["a@UK", "a@FR", "a@*", "b@UK"], np.ones((4, 1)), np.ones((4, 1)),
        ...           np.zeros(1, bool), np.zeros(1, int), 0)
        >>> p.siblings.tolist()
        [[1, -1], [0, -1], [0, 1], [-1, -1]]
        """
        sku = pd.factorize(np.array([sku_of(s) for s in self.series], dtype=object))[0]
        location = ~np.fromiter(map(is_rollup, self.series), bool, len(self.series))
        rows = np.flatnonzero(location)
        # each SKU's locations in a row of `table`, in series order, -1 after the last
        slot = pd.Series(sku[rows]).groupby(sku[rows]).cumcount().to_numpy()
        table = np.full((sku.max(initial=-1) + 1, slot.max(initial=-1) + 1), -1, np.int64)
        table[sku[rows], slot] = rows
        mine = table[sku]  # [S, M]: a series' SKU's locations, itself among them
        other = (mine >= 0) & (mine != np.arange(len(sku))[:, None])
        order = np.argsort(~other, axis=1, kind="stable")  # the others first, in order
        out = np.where(np.take_along_axis(other, order, 1), np.take_along_axis(mine, order, 1), -1)
        return out[:, : other.sum(1).max(initial=0)]

    @cached_property
    def cumulative(self) -> np.ndarray:
        """Demand summed up to each column [S, T + 1]: column ``t`` holds buckets before ``t``."""
        out = np.zeros((len(self.series), self.demand.shape[1] + 1), np.float64)
        np.cumsum(self.demand, axis=1, out=out[:, 1:])
        return out

    def calendar(self, extra: int) -> tuple[np.ndarray, np.ndarray]:
        """Closed flags and weekdays of the panel's buckets and of ``extra`` buckets after it,
        those expected by habit: closed when the same slot was closed one and two weeks
        earlier, as ``TradingCalendar.expected_closed`` does without configured closures
        (the worker passes its own calendar to ``predict`` instead).

        >>> p = Panel(["a"], np.zeros((1, 14), np.float32), np.zeros((1, 14), np.float32),
        ...           np.arange(14) % 7 == 5, np.arange(14) % 7, 0)
        >>> [c.tolist()[14:] for c in p.calendar(7)]
        [[False, False, False, False, False, True, False], [0, 1, 2, 3, 4, 5, 6]]
        """
        width = len(self.closed)
        closed = np.concatenate([self.closed, np.zeros(extra, bool)])
        weekday = np.concatenate([self.weekday, np.zeros(extra, self.weekday.dtype)])
        for j in range(width, width + extra):
            weekday[j] = weekday[j - SEASON] if j >= SEASON else (weekday[j - 1] + 1) % 7
            closed[j] = j >= 2 * SEASON and closed[j - SEASON] and closed[j - 2 * SEASON]
        return closed, weekday

    def rows(self, index: Sequence[int] | np.ndarray) -> Panel:
        """The same buckets for some series only."""
        index = np.asarray(index)
        return Panel(
            [self.series[i] for i in index],
            self.demand[index],
            self.price[index],
            self.closed,
            self.weekday,
            self.first_bucket,
            None if self.signals is None else self.signals[index],
        )

    @classmethod
    def from_buckets(
        cls,
        demand: Mapping[tuple[str, int], float],
        revenue: Mapping[tuple[str, int], float],
        closed: Set[int],
        weekday: Callable[[int], int],
        signals: Mapping[tuple[str, int], Sequence[float]] | None = None,
    ) -> Panel:
        """A panel from demand and revenue per (series, bucket) and the closed buckets, as
        ``streamer.ops.backtest.truth_from`` computes them; ``weekday`` maps a bucket to its
        weekday (``TradingCalendar.weekday``). It spans the first to the last bucket seen.

        >>> p = Panel.from_buckets({("a", 10): 2.0, ("a", 12): 4.0}, {("a", 12): 6.0}, {11},
        ...                        lambda b: b % 7)
        >>> p.demand.tolist(), p.price.tolist(), p.closed.tolist(), p.first_bucket
        ([[2.0, 0.0, 4.0]], [[nan, nan, 1.5]], [False, True, False], 10)
        """
        series = sorted({s for s, _ in demand})
        row = {s: i for i, s in enumerate(series)}
        first = min(min(b for _, b in demand), min(closed, default=math.inf))
        last = max(max(b for _, b in demand), max(closed, default=-math.inf))
        first, width = int(first), int(last - first + 1)
        d = np.zeros((len(series), width), np.float32)
        rev = np.zeros_like(d)
        for (s, b), y in demand.items():
            d[row[s], b - first] = y
            rev[row[s], b - first] = revenue.get((s, b), 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            price = np.where((d > 0) & (rev > 0), rev / d, np.nan).astype(np.float32)
        cols = range(first, first + width)
        sig = None
        if signals is not None:
            sig = np.zeros((len(series), width, len(SIGNALS)), np.float32)
            for (s, b), values in signals.items():
                if s in row and 0 <= b - first < width:
                    sig[row[s], b - first] = values
        return cls(
            series,
            d,
            price,
            np.array([b in closed for b in cols]),
            np.array([weekday(b) for b in cols]),
            first,
            sig,
        )


def window_scale(demand: Any, is_open: Any) -> Any:
    """Each window's scale over the last axis: the mean demand of its open buckets plus
    ``EPS``; numpy arrays and torch tensors alike (the trees scale as the networks do).

    >>> window_scale(np.array([[2.0, 9.0, 4.0]]), np.array([[True, False, True]])).tolist()
    [3.1]
    """
    opened = is_open.sum(-1)
    return (demand * is_open).sum(-1) / (opened + (opened == 0)) + EPS


class Inputs(NamedTuple):
    """Raw inputs of a batch of windows: the model scales and encodes them itself."""

    demand: np.ndarray  # float32 [B, L]
    price: np.ndarray  # float32 [B, L], NaN: nothing sold
    closed: np.ndarray  # bool [B, L]
    weekday: np.ndarray  # int64 [B, L]
    closed_ahead: np.ndarray  # bool [B, H]
    weekday_ahead: np.ndarray  # int64 [B, H]
    # demand of up to K other locations of the window's SKU over the same buckets, NaN rows
    # where it has fewer; K = 0 for a model that does not read them (``GlobalModel.locations``)
    siblings: np.ndarray  # float32 [B, K, L]
    # the customer and promotion signals as model inputs (``signal_steps``); none for a model
    # that does not read them (``LSTMConfig.signals``)
    signals: np.ndarray  # float32 [B, L, len(SIGNALS) or 0]

    def to(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(a).to(device, non_blocking=True) for a in self)


class GlobalModel(Protocol):
    """What the trainer trains, the registry stores and a worker serves: one model over all
    series that forecasts quantiles of gathered windows (``Inputs``)."""

    cfg: LSTMConfig
    locations: int  # sibling locations its inputs carry (``gather``)
    suffix: str  # of its weights file in the registry

    def forecast(self, inputs: Inputs) -> np.ndarray:
        """Quantiles in units [B, H, Q]: ascending, non-negative, 0 where closed ahead."""
        ...

    def fit(
        self,
        panel: Panel,
        cfg: LSTMConfig,
        device: torch.device | str,
        end: int,
        on_epoch: Callable[[int, float], None] | None,
    ) -> TrainReport:
        """Train in place on windows whose targets are before bucket ``end``."""
        ...

    def warm_from(self, other: GlobalModel) -> bool:
        """Start from ``other``'s weights when they fit this model; whether it did."""
        ...

    def weights(self) -> bytes: ...

    def load_weights(self, data: bytes, map_location: torch.device) -> None:
        """The weights of ``weights()``; a ValueError says why they cannot be read or do not
        fit."""
        ...

    def place(self, device: torch.device | str) -> GlobalModel:
        """This model on ``device``, in evaluation mode."""
        ...


class TorchForecaster(nn.Module):
    """A torch global model: ``forward`` maps the inputs to scaled quantiles and a scale;
    training, forecasting and weights are common to every such architecture."""

    locations: ClassVar[int] = 0
    suffix: ClassVar[str] = ".pt"

    def __init__(self, cfg: LSTMConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def regularizer(self) -> torch.Tensor | float:
        """A loss term of the last training forward pass beyond the pinball loss."""
        return 0.0

    def forecast(self, inputs: Inputs) -> np.ndarray:
        return forecast_windows(self, inputs)

    def fit(
        self,
        panel: Panel,
        cfg: LSTMConfig,
        device: torch.device | str,
        end: int,
        on_epoch: Callable[[int, float], None] | None,
    ) -> TrainReport:
        return train(self, panel, cfg, device, end, on_epoch)

    def warm_from(self, other: GlobalModel) -> bool:
        if type(other) is not type(self) or shape_of(other.cfg) != shape_of(self.cfg):
            return False
        self.load_state_dict(other.state_dict())  # type: ignore[attr-defined]
        return True

    def weights(self) -> bytes:
        buf = io.BytesIO()
        torch.save(self.state_dict(), buf)
        return buf.getvalue()

    def load_weights(self, data: bytes, map_location: torch.device) -> None:
        try:
            state = torch.load(io.BytesIO(data), weights_only=True, map_location=map_location)
        except Exception as exc:  # torch raises many types for a corrupt archive
            raise ValueError(f"unreadable weights: {exc}") from exc
        try:
            self.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise ValueError(f"incompatible shapes for its config: {exc}") from exc

    def place(self, device: torch.device | str) -> TorchForecaster:
        return self.to(device).eval()


SHAPE = ("arch", "seq_len", "hidden", "layers", "dropout", "horizon", "quantiles", "signals")


def shape_of(cfg: LSTMConfig) -> tuple[object, ...]:
    """The config fields that shape the weights: two models alike in them share weights."""
    return tuple(getattr(cfg, f) for f in SHAPE)


class GlobalLSTM(TorchForecaster):
    """LSTM over the scaled input window; its last state, the level and the calendar of the
    buckets ahead go through a small MLP to ``horizon`` x ``len(quantiles)`` outputs.

    Subclasses add inputs through two hooks: ``step_extras`` (more inputs per time step,
    ``EXTRA_STEPS`` of them) and ``head_extras`` (more inputs to the head, ``EXTRA_HEAD``),
    and build their layers in ``build_extras``, under the same seed."""

    EXTRA_STEPS: ClassVar[int] = 0
    EXTRA_HEAD: ClassVar[int] = 0

    def __init__(self, cfg: LSTMConfig) -> None:
        super().__init__(cfg)
        # one-hot rows by indexing, not part of the weights
        self.weekdays: torch.Tensor
        self.register_buffer("weekdays", torch.eye(7), persistent=False)
        # weights depend on the seed only, not on whatever used the global generator before
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.lstm = nn.LSTM(
                self.step_inputs,
                cfg.hidden,
                cfg.layers,
                dropout=cfg.dropout if cfg.layers > 1 else 0.0,
            )
            self.drop = nn.Dropout(cfg.dropout)
            self.head = nn.Sequential(
                nn.Linear(cfg.hidden + 1 + self.EXTRA_HEAD + N_AHEAD * cfg.horizon, cfg.hidden),
                nn.ReLU(),
                nn.Linear(cfg.hidden, cfg.horizon * len(cfg.quantiles)),
            )
            self.build_extras()

    @property
    def step_inputs(self) -> int:
        """Inputs per step: the plain ones, the signals when read, a subclass's extras."""
        return N_INPUTS + len(SIGNALS) * self.cfg.signals + self.EXTRA_STEPS

    def build_extras(self) -> None:
        """Layers of a subclass's extra inputs."""

    def step_extras(
        self,
        scaled: torch.Tensor,
        is_open: torch.Tensor,
        scale: torch.Tensor,
        siblings: torch.Tensor,
    ) -> torch.Tensor:
        """Extra inputs per step [B, L, EXTRA_STEPS]."""
        return scaled.new_zeros((*scaled.shape, 0))

    def head_extras(self, scaled: torch.Tensor, is_open: torch.Tensor) -> torch.Tensor:
        """Extra inputs of the head [B, EXTRA_HEAD]."""
        return scaled.new_zeros((len(scaled), 0))

    def forward(
        self,
        demand: torch.Tensor,
        price: torch.Tensor,
        closed: torch.Tensor,
        weekday: torch.Tensor,
        closed_ahead: torch.Tensor,
        weekday_ahead: torch.Tensor,
        siblings: torch.Tensor,
        signals: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled quantiles [B, H, Q] (ascending) and the scale [B] that turns them into units."""
        is_open = ~closed
        scale = window_scale(demand, is_open)
        level = torch.log1p(scale)
        sold = ~torch.isnan(price)
        mean_price = price.nan_to_num(0.0).sum(1) / sold.sum(1).clamp(min=1)
        scaled = demand / scale[:, None]
        # filled in place, time-major as the LSTM kernel wants it: building the features by
        # concatenation and transposition cost about as much as the LSTM itself
        steps = demand.new_empty((demand.shape[1], demand.shape[0], self.step_inputs))
        steps[..., 0] = scaled.T
        steps[..., 1] = closed.T
        steps[..., 2:9] = self.weekdays[weekday.T]
        # price relative to the window's own mean price: a level-free promotion signal
        rel = torch.log(price / mean_price[:, None]).clamp(-3.0, 3.0).nan_to_num(0.0)
        steps[..., 9] = rel.T
        steps[..., 10] = ~sold.T
        steps[..., 11] = level
        at = N_INPUTS + signals.shape[2]
        steps[..., N_INPUTS:at] = signals.transpose(0, 1)
        if self.EXTRA_STEPS:
            steps[..., at:] = self.step_extras(scaled, is_open, scale, siblings).transpose(0, 1)
        out, _ = self.lstm(steps)
        ahead = torch.cat([self.weekdays[weekday_ahead], closed_ahead[..., None].float()], 2)
        extra = self.head_extras(scaled, is_open)
        z = self.head(torch.cat([self.drop(out[-1]), level[:, None], extra, ahead.flatten(1)], 1))
        z = z.view(len(z), self.cfg.horizon, len(self.cfg.quantiles)).float()
        q = torch.cat([z[..., :1], z[..., :1] + F.softplus(z[..., 1:]).cumsum(2)], 2)
        return q, scale.float()


def choose_device(override: str | None = None) -> torch.device:
    """``override`` when given, else "cuda" when available, else "cpu"."""
    if override:
        return torch.device(override)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def gather(
    panel: Panel,
    rows: np.ndarray,
    origins: np.ndarray,
    seq_len: int,
    horizon: int,
    ahead: Close | None = None,
    locations: int = 0,
    signals: bool = False,
) -> Inputs:
    """Inputs of the windows of series ``rows`` ending at columns ``origins`` (the last
    input), all at once, with the demand of up to ``locations`` other locations of each SKU
    and, when ``signals``, the customer and promotion signals.
    The calendar ahead comes from the close ``ahead`` (the same for every window) when given,
    else from ``Panel.calendar``."""
    width = panel.demand.shape[1]
    if origins.min() < seq_len - 1 or origins.max() >= width:
        raise ValueError(
            f"windows need {seq_len} buckets up to their origin inside the panel's "
            f"{panel.first_bucket}..{panel.last_bucket}"
        )
    cols = origins[:, None] + np.arange(1 - seq_len, 1)
    r = rows[:, None]
    if ahead is None:
        closed, weekday = panel.calendar(horizon)
        future = origins[:, None] + np.arange(1, horizon + 1)
        closed_ahead, weekday_ahead = closed[future], weekday[future]
    else:
        if ahead.horizon != horizon:
            raise ValueError(f"`ahead` describes {ahead.horizon} buckets, not {horizon}")
        shape = (len(rows), horizon)
        closed_ahead = np.broadcast_to(ahead.ahead_closed, shape)
        weekday_ahead = np.broadcast_to(ahead.ahead_weekday, shape)
    demand = panel.demand[r, cols]
    return Inputs(
        demand,
        panel.price[r, cols],
        panel.closed[cols],
        panel.weekday[cols].astype(np.int64),
        np.ascontiguousarray(closed_ahead),
        np.ascontiguousarray(weekday_ahead, dtype=np.int64),
        _siblings(panel, rows, origins, cols, locations),
        signal_steps(panel, rows, cols, demand, panel.closed[cols]) if signals else _none(cols),
    )


def _none(cols: np.ndarray) -> np.ndarray:
    return np.zeros((*cols.shape, 0), np.float32)


def signal_steps(
    panel: Panel, rows: np.ndarray, cols: np.ndarray, demand: np.ndarray, closed: np.ndarray
) -> np.ndarray:
    """The signals of windows [B, L, 5] as inputs, free of the series' level: log1p of the
    buyers and of the new buyers, the top buyer's and the promotion's shares of the bucket's
    demand, log1p of the largest line over the window's scale (its mean, as ``GlobalLSTM``)."""
    if panel.signals is None:
        return np.zeros((*cols.shape, len(SIGNALS)), np.float32)
    raw = panel.signals[rows[:, None], cols]
    scale = window_scale(demand, ~closed)
    sold = np.maximum(demand, 1.0)
    return np.stack(
        [
            np.log1p(raw[..., 0]),
            np.log1p(raw[..., 1]),
            np.clip(raw[..., 2] / sold, 0.0, 1.0),
            np.log1p(raw[..., 3] / scale[:, None]),
            np.clip(raw[..., 4] / sold, 0.0, 1.0),
        ],
        2,
    ).astype(np.float32)


def _siblings(
    panel: Panel, rows: np.ndarray, origins: np.ndarray, cols: np.ndarray, k: int
) -> np.ndarray:
    """Demand [B, k, L] over columns ``cols`` [B, L] of the ``k`` sibling locations that sold
    most within each window (first rows first among equals), NaN for the rest: chosen by what
    the window shows, so that nothing after its origin steers it, and only those that sold in
    it, as a worker's partition holds only its active series."""
    if k == 0:
        return np.zeros((len(rows), 0, cols.shape[1]), np.float32)
    candidates = panel.siblings[rows]  # [B, M]
    ends = origins[:, None] + 1
    sold = (
        panel.cumulative[np.maximum(candidates, 0), ends]
        - panel.cumulative[np.maximum(candidates, 0), ends - cols.shape[1]]
    )
    sold = np.where(candidates >= 0, sold, 0.0)
    order = np.argsort(-sold, axis=1, kind="stable")[:, :k]
    chosen = np.where(
        np.take_along_axis(sold, order, 1) > 0, np.take_along_axis(candidates, order, 1), -1
    )
    if chosen.shape[1] < k:
        chosen = np.pad(chosen, ((0, 0), (0, k - chosen.shape[1])), constant_values=-1)
    out = panel.demand[np.maximum(chosen, 0)[:, :, None], cols[:, None, :]]
    return np.where(chosen[:, :, None] >= 0, out, np.nan).astype(np.float32)


def inputs_of(
    model: GlobalModel,
    panel: Panel,
    rows: np.ndarray,
    origins: np.ndarray,
    ahead: Close | None = None,
) -> Inputs:
    """``gather`` with the window, horizon and sibling locations ``model`` reads."""
    cfg = model.cfg
    return gather(
        panel, rows, origins, cfg.seq_len, cfg.horizon, ahead, model.locations, cfg.signals
    )


def forecast_windows(model: TorchForecaster, inputs: Inputs) -> np.ndarray:
    """Quantiles in units [B, H, Q] of gathered windows: non-negative, 0 when closed."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(inputs.demand), INFERENCE_CHUNK):
            chunk = Inputs(*(a[i : i + INFERENCE_CHUNK] for a in inputs))
            q, scale = model(*chunk.to(device))
            out.append((q * scale[:, None, None]).clamp(min=0).cpu().numpy())
    q = np.concatenate(out) if out else np.zeros((0, model.cfg.horizon, len(model.cfg.quantiles)))
    q[inputs.closed_ahead] = 0.0
    return q


def predict(
    model: GlobalModel, panel: Panel, at_bucket: int, ahead: Close | None = None
) -> np.ndarray:
    """Quantiles [S, horizon, Q] for every series of the panel, for the buckets after
    ``at_bucket`` (the bucket that just closed, the last input). ``ahead`` is the calendar of
    those buckets, required when they are beyond the panel (as at a live bucket close)."""
    rows = np.arange(len(panel.series))
    origins = np.full(len(rows), at_bucket - panel.first_bucket)
    return model.forecast(inputs_of(model, panel, rows, origins, ahead))


def pinball(q: torch.Tensor, y: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Quantile loss of every quantile: q [..., Q], y [...], levels [Q]."""
    diff = y[..., None] - q
    return torch.maximum(levels * diff, (levels - 1) * diff)


@dataclass(frozen=True)
class TrainReport:
    epoch_loss: list[float]  # mean scaled pinball loss of the training batches
    epoch_seconds: list[float]
    windows: int  # eligible windows before ``end``
    seconds: float
    device: str


def sold_within(panel: Panel, origins: np.ndarray, length: int) -> np.ndarray:
    """Whether each series sold in the ``length`` buckets up to each origin column [S, O]."""
    sales = np.zeros((len(panel.series), panel.demand.shape[1] + 1), np.int32)
    np.cumsum(panel.demand > 0, axis=1, out=sales[:, 1:])
    return sales[:, origins + 1] - sales[:, np.maximum(origins + 1 - length, 0)] > 0


def training_windows(panel: Panel, end: int, seq_len: int, horizon: int) -> np.ndarray:
    """(row, origin column) of every window with a target before bucket ``end``: full input
    inside the panel, at least half of it after the series' first sale, a sale within it
    (the worker only forecasts active series) and an open target before ``end``."""
    end_col = min(end - panel.first_bucket, panel.demand.shape[1])
    origins = np.arange(seq_len - 1, end_col - 1)
    if len(origins) == 0:
        return np.zeros((0, 2), np.int64)
    active = sold_within(panel, origins, seq_len)
    settled = panel.first_sale[:, None] <= origins - seq_len // 2
    targets = origins[:, None] + np.arange(1, horizon + 1)
    open_target = ((~panel.closed[np.minimum(targets, end_col - 1)]) & (targets < end_col)).any(1)
    keep = active & settled & open_target
    rows, idx = np.nonzero(keep)
    return np.stack([rows, origins[idx]], axis=1)


def window_targets(
    panel: Panel, rows: np.ndarray, origins: np.ndarray, end_col: int, horizon: int
) -> tuple[np.ndarray, np.ndarray]:
    """Demand [B, H] after each window's origin, and whether each target is learned from: open
    and before column ``end_col``."""
    targets = origins[:, None] + np.arange(1, horizon + 1)
    cols = np.minimum(targets, end_col - 1)
    return panel.demand[rows[:, None], cols], (targets < end_col) & ~panel.closed[cols]


def _batch_loss(
    model: TorchForecaster,
    panel: Panel,
    rows: np.ndarray,
    origins: np.ndarray,
    end_col: int,
    levels: torch.Tensor,
    device: torch.device,
    autocast: contextlib.AbstractContextManager,
) -> torch.Tensor:
    """The mean pinball loss of a batch of windows, in units of each window's scale, over the
    targets before column ``end_col`` on open days."""
    inputs = inputs_of(model, panel, rows, origins)
    y, learned = window_targets(panel, rows, origins, end_col, model.cfg.horizon)
    mask = torch.from_numpy(learned).to(device)
    with autocast:
        q, scale = model(*inputs.to(device))
    loss = pinball(q, torch.from_numpy(y).to(device) / scale[:, None], levels).mean(2)
    return (loss * mask).sum() / mask.sum() + model.regularizer()


def native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (elsewhere torch emulates it, slower
    than float32)."""
    # a private probe of torch's: a torch without it trains in float32
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(probe is not None and probe())


@dataclass(frozen=True)
class Precision:
    """How a training step computes: under autocast to ``dtype`` (None: float32), and whether
    its gradients go through a scaler (float16's 5-bit exponent underflows small gradients;
    bfloat16 keeps float32's)."""

    dtype: torch.dtype | None = None
    scaled: bool = False

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)

    def scaler(self, device: torch.device) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(device.type, enabled=self.scaled)


def training_precision(device: torch.device, bfloat16: bool = True) -> Precision:
    """The precision a training step runs in: float16 on CUDA (with the gradient scaler),
    bfloat16 on a CPU that computes it natively when ``bfloat16``, float32 elsewhere."""
    if device.type == "cuda":
        return Precision(torch.float16, scaled=True)
    if bfloat16 and native_bfloat16():
        return Precision(torch.bfloat16)
    return Precision()


def _descend(
    model: TorchForecaster,
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
) -> None:
    """One optimizer step on ``loss``, through the (mixed precision) gradient scaler."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    # one batch of bursty windows must not undo an epoch of recurrent weights
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()


def train(
    model: TorchForecaster,
    panel: Panel,
    cfg: LSTMConfig,
    device: torch.device | str,
    end: int,
    on_epoch: Callable[[int, float], None] | None = None,
) -> TrainReport:
    """Train ``model`` in place on windows whose targets are before bucket ``end``.

    ``cfg`` gives the training settings (epochs, windows per epoch, batch, learning rate,
    seed, precision); the architecture is the model's own. Mixed precision on CUDA (float16
    with a gradient scaler) and on a CPU with native bfloat16 (``training_precision``), else
    float32; on a CPU a run is repeatable given the seed.
    ``on_epoch(epoch, loss)`` is called after each epoch (progress bars, logs).
    """
    started = time.perf_counter()
    device = torch.device(device)
    cuda = device.type == "cuda"
    windows = training_windows(panel, end, model.cfg.seq_len, model.cfg.horizon)
    if len(windows) == 0:
        raise ValueError(f"no training window ends before bucket {end}")
    end_col = end - panel.first_bucket
    rng = np.random.default_rng(cfg.seed)
    levels = torch.tensor(model.cfg.quantiles, device=device)
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    precision = training_precision(device, cfg.bfloat16)
    scaler, autocast = precision.scaler(device), precision.autocast(device)
    per_epoch = min(cfg.windows_per_epoch or len(windows), len(windows))
    losses, seconds = [], []
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.manual_seed(cfg.seed)
        for _ in range(cfg.epochs):
            t0 = time.perf_counter()
            draw = windows[rng.choice(len(windows), per_epoch, replace=False)]
            total = torch.zeros((), device=device)
            batches = 0
            for i in range(0, per_epoch, cfg.batch_size):
                rows, origins = draw[i : i + cfg.batch_size].T
                loss = _batch_loss(model, panel, rows, origins, end_col, levels, device, autocast)
                _descend(model, loss, optimizer, scaler)
                total += loss.detach()
                batches += 1
            losses.append(float(total) / batches)
            seconds.append(time.perf_counter() - t0)
            if on_epoch is not None:
                on_epoch(len(losses), losses[-1])
    model.eval()
    return TrainReport(losses, seconds, len(windows), time.perf_counter() - started, str(device))


@dataclass(frozen=True)
class Validation:
    """Errors in units over the open targets of the validation span, horizons 1..H."""

    mae: float  # of the p50
    pinball: float  # mean over the quantiles
    coverage: float  # share of truths between the lowest and the highest quantile
    naive_mae: float  # the weekly seasonal naive on the same points
    mae_by_horizon: list[float]
    points: int
    # the reference scores beside the MAE (NaN in records from before they were kept): on
    # intermittent demand a forecast of zeros wins on MAE alone
    rmse: float = math.nan  # of the p50
    naive_rmse: float = math.nan
    naive_pinball: float = math.nan  # the naive's point forecast as every quantile
    zeros_mae: float = math.nan  # a forecast of zeros
    zeros_rmse: float = math.nan
    zeros_pinball: float = math.nan

    @property
    def rel_mae(self) -> float:
        return self.mae / self.naive_mae if self.naive_mae else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rel_mae": self.rel_mae}


def validation_points(
    panel: Panel, span: int, horizon: int, stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """The windows of the validation of the last ``span`` buckets: (row, origin column)
    pairs and a mask [N, H] of their scored targets. Only series active at the origin (a sale
    in the last ``ACTIVE_BUCKETS``) are forecast, as in the worker. A series' origins are
    ``stride`` buckets apart from its first: with a stride of ``horizon`` each of its open
    targets after it became active is scored once, at one horizon (rolling origins, as in
    statsforecast's cross-validation), with a stride of 1 once at each horizon. A series
    active from the start starts at its own offset (its row modulo the stride), so that
    horizons do not fall on the same weekdays in every series: with one offset for all, a
    weekly stride would score the horizon that lands on a closed day nowhere. A series that
    becomes active in the span starts at its first active origin. The points do not depend
    on the model, so a candidate, a champion and the naive are scored on exactly the same
    ones."""
    width = panel.demand.shape[1]
    start = width - span
    origins = np.arange(start - horizon, width - 1)
    if start - horizon - ACTIVE_BUCKETS + 1 < 0:
        raise ValueError(f"panel too short to validate its last {span} buckets")
    active = sold_within(panel, origins, ACTIVE_BUCKETS)
    at = np.arange(len(origins))[None, :]
    first = np.maximum(active.argmax(axis=1), np.arange(len(panel.series)) % stride)[:, None]
    active &= (at >= first) & ((at - first) % stride == 0)
    rows, idx = np.nonzero(active)
    pairs = np.stack([rows, origins[idx]], axis=1)
    targets = pairs[:, 1:] + np.arange(1, horizon + 1)
    scored = (targets >= start) & (targets < width)
    scored &= ~panel.closed[np.minimum(targets, width - 1)]
    keep = scored.any(1)
    return pairs[keep], scored[keep]


def seasonal_naive(panel: Panel, rows: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
    """The weekly seasonal naive [B, H] from origin columns: the demand of the same weekday a
    week before the target, or of the latest open one up to ``NAIVE_WEEKS`` back when that
    was closed (a closed day is not zero demand); 0 when none is."""
    targets = origins[:, None] + np.arange(1, horizon + 1)
    out = np.zeros(targets.shape, np.float32)
    found = np.zeros(targets.shape, bool)
    for weeks in range(1, NAIVE_WEEKS + 1):
        src = targets - weeks * SEASON
        usable = ~found & (src >= 0) & ~panel.closed[np.maximum(src, 0)]
        out[usable] = panel.demand[np.broadcast_to(rows[:, None], src.shape)[usable], src[usable]]
        found |= usable
    return out


def validate(model: GlobalModel, panel: Panel, span: int, stride: int) -> Validation:
    """Score ``model`` and the weekly seasonal naive on the last ``span`` buckets of the
    panel, from origins ``stride`` buckets apart (see ``validation_points``); the model must
    not have trained on them."""
    horizon, levels = model.cfg.horizon, np.array(model.cfg.quantiles)
    pairs, scored = validation_points(panel, span, horizon, stride)
    if not scored.any():
        raise ValueError(f"nothing to score in the last {span} buckets")
    rows, origins = pairs.T
    q = model.forecast(inputs_of(model, panel, rows, origins))
    cols = np.minimum(origins[:, None] + np.arange(1, horizon + 1), panel.demand.shape[1] - 1)
    y = panel.demand[rows[:, None], cols]
    naive = seasonal_naive(panel, rows, origins, horizon)
    err = np.abs(y - q[..., model.cfg.median])
    covered = (q[..., 0] <= y) & (y <= q[..., -1])

    def loss(quantiles: np.ndarray) -> float:
        t = torch.from_numpy(np.ascontiguousarray(quantiles, np.float32))
        per = pinball(t, torch.from_numpy(y), torch.from_numpy(levels)).numpy()
        return float(per[scored].mean())

    def rmse(point: np.ndarray) -> float:
        return float(np.sqrt(((y - point)[scored] ** 2).mean()))

    def as_quantiles(point: np.ndarray) -> np.ndarray:
        return np.repeat(point[..., None], len(levels), axis=2)

    zeros = np.zeros_like(y)
    return Validation(
        mae=float(err[scored].mean()),
        pinball=loss(q),
        coverage=float(covered[scored].mean()),
        naive_mae=float(np.abs(y - naive)[scored].mean()),
        mae_by_horizon=[float(err[scored[:, k], k].mean()) for k in range(horizon)],
        points=int(scored.sum()),
        rmse=rmse(q[..., model.cfg.median]),
        naive_rmse=rmse(naive),
        naive_pinball=loss(as_quantiles(naive)),
        zeros_mae=float(np.abs(y)[scored].mean()),
        zeros_rmse=rmse(zeros),
        zeros_pinball=loss(as_quantiles(zeros)),
    )
