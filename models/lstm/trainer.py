"""One refresh of the global model: a tournament of candidates, validated alike, whose winner
is saved and maybe promoted.

Tournament: every architecture asked for (``architectures``, one by default) trains a
candidate on the same buckets and is validated on the same points; the one with the lowest
validation MAE is *the* candidate, and every entrant is saved with its scores, so a version's
metadata says how each architecture did at each refresh.

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
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from models.lstm.architectures import build
from models.lstm.kinds import Architecture
from models.lstm.network import (
    GlobalModel,
    LSTMConfig,
    Panel,
    TrainReport,
    Validation,
    shape_of,
    validate,
)
from models.lstm.registry import CheckpointError, Registry

__all__ = ["Entrant", "RefreshReport", "decide", "refresh"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entrant:
    """One architecture's candidate in a refresh's tournament."""

    arch: Architecture
    version: int
    validation: Validation
    train: TrainReport
    warm: bool  # started from an earlier version's weights

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "arch": self.arch.value, "validation": self.validation.to_dict()}


@dataclass(frozen=True)
class RefreshReport:
    """The tournament's winner (``version``, ``candidate``, ``train``), the decision on it, and
    every entrant."""

    version: int
    promoted: bool
    reason: str
    candidate: Validation
    champion_version: int | None  # the champion it was compared with, if loadable
    champion: Validation | None
    train: TrainReport
    validate_seconds: float  # every entrant, the champion and the naive
    total_seconds: float  # train + validate + save + promote
    entrants: tuple[Entrant, ...] = ()

    @property
    def arch(self) -> Architecture:
        return next(e.arch for e in self.entrants if e.version == self.version)

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "candidate": self.candidate.to_dict(),
            "champion": self.champion.to_dict() if self.champion else None,
            "entrants": [e.to_dict() for e in self.entrants],
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


def _warm_start(registry: Registry, cfg: LSTMConfig, end: int) -> GlobalModel | None:
    """The version to start a candidate from: the champion when it has ``cfg``'s architecture
    and sizes, else the latest saved version that has; only one trained on buckets before
    ``end`` (the validation must stay out of sample); None when none loads."""
    if cfg.warm_epochs < 1:
        return None
    champion = registry.champion()
    later_first = sorted(registry.versions(), reverse=True)
    for version in ([champion] if champion is not None else []) + later_first:
        try:
            meta = registry.metadata(version)
            saved = LSTMConfig.from_dict(meta["config"])
            if shape_of(saved) == shape_of(cfg) and meta["data_range"]["last_bucket"] < end:
                return registry.load(version)
        except (CheckpointError, KeyError, TypeError, ValueError):
            continue  # refresh() reports a bad champion when it compares
    return None


def _train_candidate(
    panel: Panel,
    registry: Registry,
    cfg: LSTMConfig,
    device: torch.device | str,
    end: int,
    on_epoch: Callable[[int, float], None] | None,
) -> tuple[GlobalModel, TrainReport, bool]:
    """A candidate trained on the buckets before ``end``: from the warm start's weights for
    ``cfg.warm_epochs`` when there is one that fits, else from scratch for ``cfg.epochs``;
    and whether it started warm."""
    candidate = build(cfg)
    warm = _warm_start(registry, cfg, end)
    started_warm = warm is not None and candidate.warm_from(warm)
    train_cfg = replace(cfg, epochs=cfg.warm_epochs) if started_warm else cfg
    return candidate, candidate.fit(panel, train_cfg, device, end, on_epoch), started_warm


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
        scores = validate(champion.place(device), panel, cfg.validation, cfg.validation_every)
        return champion_version, scores, ""
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
    architectures: Sequence[Architecture] = (),
) -> RefreshReport:
    """Train a candidate of each of ``architectures`` (default: ``cfg.arch`` alone) on the
    panel's buckets before its last ``cfg.validation``, validate them, the champion and the
    seasonal naive on those, save every candidate and promote the tournament's winner by the
    rule. ``on_epoch`` goes to each training. With ``promote`` False the rule is applied and
    recorded but the champion pointer stays: the caller promotes at a time of its choosing (a
    backtest serves a refresh from a stated event time, ``streamer.ops.backtest``)."""
    started = time.perf_counter()
    end = panel.last_bucket + 1 - cfg.validation
    validate_seconds = 0.0
    trained = []
    configs = [
        replace(cfg, arch=Architecture(a)) for a in dict.fromkeys(architectures or [cfg.arch])
    ]
    for entrant_cfg in configs:
        build(entrant_cfg)  # a config an architecture refuses fails before any training
    for entrant_cfg in configs:
        model, report, warm = _train_candidate(panel, registry, entrant_cfg, device, end, on_epoch)
        t0 = time.perf_counter()
        scores = validate(model, panel, cfg.validation, cfg.validation_every)
        trained.append((model, report, warm, scores))
        validate_seconds += time.perf_counter() - t0
    # the lowest MAE, the first of equals; a NaN MAE (nothing it could score) never wins
    best = min(
        range(len(trained)), key=lambda i: (math.isnan(trained[i][3].mae), trained[i][3].mae)
    )
    winner, winner_train, _, scores = trained[best]

    t0 = time.perf_counter()
    champion_version, champion_scores, note = _champion_scores(registry, panel, cfg, device)
    validate_seconds += time.perf_counter() - t0

    promoted, reason = decide(scores, champion_scores, champion_version)
    reason += note
    entrants = []
    for i, (model, report, warm, entrant_scores) in enumerate(trained):
        won = i == best
        version = _save(
            registry, panel, end, model, report, entrant_scores, champion_version,
            champion_scores, promoted=won and promoted,
            reason=reason if won else _lost(model, entrant_scores, winner, scores),
        )  # fmt: skip
        entrants.append(Entrant(model.cfg.arch, version, entrant_scores, report, warm))
    version = entrants[best].version
    if promoted and promote:
        registry.promote(version)
    log.info("%s v%d: %s", winner.cfg.arch, version, reason)
    return RefreshReport(
        version,
        promoted,
        reason,
        scores,
        champion_version,
        champion_scores,
        winner_train,
        validate_seconds,
        time.perf_counter() - started,
        tuple(entrants),
    )


def _lost(model: GlobalModel, scores: Validation, winner: GlobalModel, best: Validation) -> str:
    """The reason of a tournament's loser."""
    return (
        f"lost the tournament: {model.cfg.arch} MAE {scores.mae:.4f} >= "
        f"{winner.cfg.arch} {best.mae:.4f}"
    )


def _save(
    registry: Registry,
    panel: Panel,
    end: int,
    model: GlobalModel,
    trained: TrainReport,
    scores: Validation,
    champion_version: int | None,
    champion_scores: Validation | None,
    promoted: bool,
    reason: str,
) -> int:
    """Save one entrant with its metadata; its version."""
    return registry.save(
        model,
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
