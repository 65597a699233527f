"""A refresh promotes a candidate only when it beats both the champion and seasonal naive."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from models.lstm.kinds import Architecture
from models.lstm.network import LSTMConfig, Panel, Validation
from models.lstm.registry import Registry
from models.lstm.trainer import decide, refresh
from tests.models.conftest import DEVICE

DAY = 86_400
GOOD = LSTMConfig(seq_len=28, hidden=16, epochs=6, windows_per_epoch=4096, batch_size=128)
# learns nothing: its forecasts are those of the initial weights
WEAK = replace(GOOD, hidden=4, epochs=1, windows_per_epoch=128, lr=1e-9, seed=1)


def test_a_winner_is_promoted_and_a_loser_is_not(tmp_path: Path, panel: Panel) -> None:
    registry = Registry(tmp_path)
    first = refresh(panel, registry, GOOD, DEVICE)
    assert first.promoted, first.reason
    assert first.candidate.mae < first.candidate.naive_mae
    assert first.champion is None and "no champion" in first.reason
    assert registry.champion() == first.version == 1

    second = refresh(panel, registry, WEAK, DEVICE)
    assert not second.promoted
    assert second.champion_version == 1 and second.champion is not None
    assert second.candidate.mae >= second.champion.mae
    assert "champion v1" in second.reason
    assert second.champion.points == second.candidate.points  # the same points
    assert registry.champion() == 1
    meta = registry.metadata(second.version)
    assert meta["promoted"] is False and meta["reason"] == second.reason
    assert meta["validation"]["champion"]["mae"] == second.champion.mae
    assert meta["validation"]["seasonal_naive_mae"] == second.candidate.naive_mae

    third = refresh(panel, registry, replace(GOOD, seed=2, epochs=8), DEVICE)
    assert third.champion is not None and third.champion.mae == first.candidate.mae
    assert third.promoted == (third.candidate.mae < first.candidate.mae)
    assert registry.champion() == (3 if third.promoted else 1)

    r = first
    assert len(r.train.epoch_seconds) == GOOD.epochs
    assert r.train.seconds > 0 and r.validate_seconds > 0
    assert r.train.seconds + r.validate_seconds <= r.total_seconds
    assert r.to_dict()["candidate"]["rel_mae"] == r.candidate.rel_mae


def test_a_candidate_that_loses_to_seasonal_naive_is_not_promoted(tmp_path: Path) -> None:
    # a strictly weekly pattern: seasonal naive is exact, nothing can beat it
    weekday = np.arange(140) % 7
    demand = np.tile(np.array([5, 9, 2, 7, 4, 0, 1], np.float32), (30, 20))
    demand *= np.arange(1, 31, dtype=np.float32)[:, None]
    price = np.where(demand > 0, 2.0, np.nan).astype(np.float32)
    closed = weekday == 5
    panel = Panel([f"{i}@UK" for i in range(30)], demand, price, closed, weekday, 900)
    registry = Registry(tmp_path)
    report = refresh(panel, registry, replace(GOOD, epochs=2), DEVICE)
    assert report.candidate.naive_mae == 0.0
    assert not report.promoted
    assert "seasonal naive" in report.reason
    assert registry.champion() is None
    assert registry.versions() == [report.version]  # saved all the same, with its reason


def test_an_unloadable_champion_is_no_bar(tmp_path: Path, panel: Panel) -> None:
    registry = Registry(tmp_path)
    first = refresh(panel, registry, WEAK, DEVICE)
    registry.promote(first.version)  # whatever its score, for the test
    registry.weights_path(first.version).write_bytes(b"garbage")
    report = refresh(panel, registry, GOOD, DEVICE)
    assert report.champion is None and report.champion_version is None
    assert "champion v1 not compared" in report.reason and "checksum mismatch" in report.reason
    assert report.promoted == (report.candidate.mae < report.candidate.naive_mae)


def test_the_rule_needs_both_wins() -> None:
    def v(mae: float, naive: float) -> Validation:
        return Validation(mae, 1.0, 0.8, naive, [mae], 100)

    assert decide(v(2.0, 3.0), v(2.5, 3.0), 7) == (
        True,
        "candidate MAE 2.0000 < seasonal naive 3.0000 and champion v7 2.5000",
    )
    assert decide(v(2.0, 1.9), v(2.5, 1.9), 7) == (
        False,
        "candidate MAE 2.0000 >= seasonal naive 1.9000",
    )
    assert decide(v(2.0, 3.0), v(2.0, 3.0), 7) == (
        False,
        "candidate MAE 2.0000 >= champion v7 2.0000",
    )
    assert decide(v(4.0, 3.0), v(2.0, 3.0), 7)[1] == (
        "candidate MAE 4.0000 >= seasonal naive 3.0000 and champion v7 2.0000"
    )


def test_a_candidate_starts_from_a_champion_of_the_same_architecture(
    panel: Panel, tmp_path: Path
) -> None:
    registry = Registry(tmp_path)
    cfg = LSTMConfig(seq_len=14, hidden=8, epochs=2, warm_epochs=1, windows_per_epoch=512)
    first = refresh(panel, registry, cfg, DEVICE)
    assert len(first.train.epoch_loss) == 2  # no champion yet: from scratch
    if not first.promoted:
        registry.promote(first.version)
    second = refresh(panel, registry, cfg, DEVICE)
    assert len(second.train.epoch_loss) == 1  # from the champion's weights
    other = refresh(panel, registry, replace(cfg, hidden=4), DEVICE)
    assert len(other.train.epoch_loss) == 2  # another architecture: from scratch


def test_a_tournament_saves_every_entrant_and_puts_forward_the_best(
    panel: Panel, tmp_path: Path
) -> None:
    registry = Registry(tmp_path)
    cfg = LSTMConfig(seq_len=28, hidden=8, epochs=2, warm_epochs=1, windows_per_epoch=1024)
    every = list(Architecture)
    first = refresh(panel, registry, cfg, DEVICE, architectures=every)
    assert [e.arch for e in first.entrants] == every
    assert registry.versions() == [e.version for e in first.entrants]
    best = min(first.entrants, key=lambda e: e.validation.mae)
    assert (first.version, first.arch) == (best.version, best.arch)
    assert first.candidate == best.validation
    assert len({e.validation.points for e in first.entrants}) == 1  # the same points
    for e in first.entrants:
        meta = registry.metadata(e.version)
        assert meta["config"]["arch"] == e.arch.value
        assert meta["validation"]["candidate"]["mae"] == e.validation.mae
        if e is best:
            assert meta["reason"] == first.reason and meta["promoted"] == first.promoted
        else:
            assert meta["promoted"] is False
            assert meta["reason"].startswith(f"lost the tournament: {e.arch.value} MAE")
    assert registry.champion() == (first.version if first.promoted else None)
    assert first.to_dict()["entrants"][0]["arch"] == every[0].value

    second = refresh(panel, registry, cfg, DEVICE, architectures=every)
    # each network starts from its own kind's latest version; the trees train from scratch
    assert [e.warm for e in second.entrants] == [a is not Architecture.LIGHTGBM for a in every]
