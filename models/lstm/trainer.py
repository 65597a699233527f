"""One refresh of the global LSTM: train a candidate, validate it, save it, maybe promote it.

Promotion rule: the candidate becomes the champion only when its validation MAE (p50, units,
horizons 1-7, open targets of the last ``cfg.validation`` buckets) is strictly lower than
both the weekly seasonal naive's and the current champion's on exactly the same points. A
champion that cannot be loaded does not count (its error is recorded); with no champion the
naive alone is the bar. Every candidate is saved, promoted or not, with the reason.

The candidate never sees the validation buckets; the champion was trained by an earlier
refresh, on data that ended no later, so the comparison is out of sample for both.

A candidate starts from the champion's weights when the champion has the same architecture
(warm start) and then trains ``cfg.warm_epochs`` epochs instead of ``cfg.epochs``: it only has
to learn what changed. The champion's training data ended before this validation window too,
so the rule above still compares out of sample.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from models.lstm.network import (
    GlobalLSTM,
    LSTMConfig,
    Panel,
    TrainReport,
    Validation,
    train,
    validate,
)
from models.lstm.registry import CheckpointError, Registry

__all__ = ["ARCHITECTURE", "RefreshReport", "decide", "refresh"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefreshReport:
    version: int
    promoted: bool
    reason: str
    candidate: Validation
    champion_version: int | None  # the champion it was compared with, if loadable
    champion: Validation | None
    train: TrainReport
    validate_seconds: float  # candidate, champion and naive
    total_seconds: float  # train + validate + save + promote

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "candidate": self.candidate.to_dict(),
            "champion": self.champion.to_dict() if self.champion else None,
        }


def decide(
    candidate: Validation, champion: Validation | None, champion_version: int | None
) -> tuple[bool, str]:
    """The promotion rule of the module docstring, with its reason either way.

    >>> v = Validation(2.0, 1.0, 0.8, 3.0, [2.0], 10)
    >>> decide(v, None, None)
    (True, 'candidate MAE 2.0000 < seasonal naive 3.0000, no champion')
    >>> decide(v, Validation(1.5, 1.0, 0.8, 3.0, [1.5], 10), 4)
    (False, 'candidate MAE 2.0000 >= champion v4 1.5000')
    """
    bars = [("seasonal naive", candidate.naive_mae)]
    if champion is not None:
        bars.append((f"champion v{champion_version}", champion.mae))
    losses = [f"{name} {mae:.4f}" for name, mae in bars if not candidate.mae < mae]
    if losses:
        return False, f"candidate MAE {candidate.mae:.4f} >= " + " and ".join(losses)
    beaten = " and ".join(f"{name} {mae:.4f}" for name, mae in bars)
    return True, f"candidate MAE {candidate.mae:.4f} < {beaten}" + (
        "" if champion is not None else ", no champion"
    )


ARCHITECTURE = ("seq_len", "hidden", "layers", "dropout", "horizon", "quantiles")


def _warm_start(registry: Registry, cfg: LSTMConfig) -> GlobalLSTM | None:
    """The champion to start a candidate from, if there is one of the same architecture."""
    if cfg.warm_epochs < 1 or (version := registry.champion()) is None:
        return None
    try:
        champion = registry.load(version)
    except CheckpointError:
        return None  # refresh() reports it when it compares
    same = all(getattr(champion.cfg, f) == getattr(cfg, f) for f in ARCHITECTURE)
    return champion if same else None


def _train_candidate(
    panel: Panel,
    registry: Registry,
    cfg: LSTMConfig,
    device: torch.device | str,
    end: int,
    on_epoch: Callable[[int, float], None] | None,
) -> tuple[GlobalLSTM, TrainReport]:
    """A candidate trained on the buckets before ``end``: from the warm start's weights for
    ``cfg.warm_epochs`` when there is one, else from scratch for ``cfg.epochs``."""
    candidate = GlobalLSTM(cfg)
    warm = _warm_start(registry, cfg)
    if warm is not None:
        candidate.load_state_dict(warm.state_dict())
    train_cfg = replace(cfg, epochs=cfg.warm_epochs) if warm is not None else cfg
    return candidate, train(candidate, panel, train_cfg, device, end, on_epoch)


def _champion_scores(
    registry: Registry, panel: Panel, cfg: LSTMConfig, device: torch.device | str
) -> tuple[int | None, Validation | None, str]:
    """The champion's version and validation, both None when there is none or it cannot run
    on this panel, and a note for the reason saying why it was skipped ("" if not)."""
    champion_version = registry.champion()
    if champion_version is None:
        return None, None, ""
    try:
        champion = registry.load(champion_version)
        return champion_version, validate(champion.to(device), panel, cfg.validation), ""
    except (CheckpointError, ValueError) as exc:
        # a champion that cannot run on this panel is no bar; say why it was skipped
        log.warning("champion v%s not compared: %s", champion_version, exc)
        return None, None, f"; champion v{champion_version} not compared: {exc}"


def refresh(
    panel: Panel,
    registry: Registry,
    cfg: LSTMConfig,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[int, float], None] | None = None,
    promote: bool = True,
) -> RefreshReport:
    """Train a candidate on the panel's buckets before its last ``cfg.validation``, validate
    it, the champion and the seasonal naive on those, save it and promote it by the rule.
    ``on_epoch`` goes to ``train``. With ``promote`` False the rule is applied and recorded
    but the champion pointer stays: the caller promotes at a time of its choosing (a backtest
    serves a refresh from a stated event time, ``streamer.ops.backtest``)."""
    started = time.perf_counter()
    end = panel.last_bucket + 1 - cfg.validation
    candidate, trained = _train_candidate(panel, registry, cfg, device, end, on_epoch)

    t0 = time.perf_counter()
    scores = validate(candidate, panel, cfg.validation)
    champion_version, champion_scores, note = _champion_scores(registry, panel, cfg, device)
    validate_seconds = time.perf_counter() - t0

    promoted, reason = decide(scores, champion_scores, champion_version)
    reason += note
    version = registry.save(
        candidate,
        data_range={"first_bucket": panel.first_bucket, "last_bucket": end - 1},
        validation={
            "buckets": [end, panel.last_bucket],
            "candidate": scores.to_dict(),
            "champion": champion_scores.to_dict() if champion_scores else None,
            "champion_version": champion_version,
            "seasonal_naive_mae": scores.naive_mae,
        },
        device=trained.device,
        train_seconds=trained.seconds,
        epoch_seconds=trained.epoch_seconds,
        promoted=promoted,
        reason=reason,
    )
    if promoted and promote:
        registry.promote(version)
    log.info("LSTM v%d: %s", version, reason)
    return RefreshReport(
        version,
        promoted,
        reason,
        scores,
        champion_version,
        champion_scores,
        trained,
        validate_seconds,
        time.perf_counter() - started,
    )
