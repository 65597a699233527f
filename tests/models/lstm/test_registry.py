"""Checkpoints: exact round trips, refusal of anything damaged, a champion that survives it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models.lstm.network import GlobalLSTM, LSTMConfig, Panel, predict, train
from models.lstm.registry import POINTER, CheckpointError, Registry, write_atomic
from tests.models.conftest import DEVICE

CFG = LSTMConfig(seq_len=14, hidden=4, epochs=1, windows_per_epoch=256, batch_size=64)


@pytest.fixture(scope="module")
def panel() -> Panel:
    rng = np.random.default_rng(3)
    demand = rng.poisson(rng.uniform(0.5, 20, (40, 1)), (40, 70)).astype(np.float32)
    price = np.where(demand > 0, rng.uniform(1, 3, demand.shape), np.nan).astype(np.float32)
    weekday = np.arange(70) % 7
    demand[:, weekday == 5] = 0
    price[:, weekday == 5] = np.nan
    return Panel([f"{i}@UK" for i in range(40)], demand, price, weekday == 5, weekday, 500)


@pytest.fixture
def trained(panel: Panel) -> GlobalLSTM:
    model = GlobalLSTM(CFG)
    train(model, panel, CFG, DEVICE, panel.last_bucket + 1)
    return model


def save(registry: Registry, model: GlobalLSTM) -> int:
    return registry.save(
        model, data_range={"first_bucket": 500, "last_bucket": 569}, promoted=False
    )


def test_round_trip_gives_identical_forecasts(
    tmp_path: Path, panel: Panel, trained: GlobalLSTM
) -> None:
    registry = Registry(tmp_path, DEVICE)
    version = save(registry, trained)
    loaded = registry.load(version)
    assert not loaded.training
    for at in (panel.last_bucket - 7, panel.last_bucket):
        np.testing.assert_array_equal(predict(loaded, panel, at), predict(trained, panel, at))
    meta = registry.metadata(version)
    assert meta["version"] == version == 1
    assert LSTMConfig.from_dict(meta["config"]) == CFG
    assert meta["data_range"] == {"first_bucket": 500, "last_bucket": 569}
    assert len(meta["sha256"]) == 64
    assert save(registry, trained) == 2 and registry.versions() == [1, 2]


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def garble_and_rehash(path: Path) -> None:
    """Bytes that pass the checksum (metadata rewritten to match) but are no torch archive."""
    data = bytearray(path.read_bytes())
    data[: len(data) // 2] = bytes(len(data) // 2)
    path.write_bytes(bytes(data))
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["sha256"] = hashlib.sha256(data).hexdigest()
    meta_path.write_text(json.dumps(meta))


def edit_metadata(**changes: object) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        meta_path = path.with_suffix(".json")
        meta = json.loads(meta_path.read_text())
        for key, value in changes.items():
            if isinstance(value, dict):
                meta[key].update(value)
            else:
                meta[key] = value
        meta_path.write_text(json.dumps(meta))

    return edit


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (truncate, "checksum mismatch"),
        (Path.unlink, "missing"),
        (garble_and_rehash, "unreadable weights"),
        (edit_metadata(sha256="0" * 64), "checksum mismatch"),
        (edit_metadata(config={"hidden": 5}), "incompatible shapes"),
        (edit_metadata(config={"unknown": 1}), "incompatible config"),
        (edit_metadata(arch=999), "incompatible"),
    ],
    ids=[
        "truncated",
        "deleted",
        "garbled",
        "wrong-checksum",
        "other-shapes",
        "other-config",
        "other-arch",
    ],
)
def test_a_damaged_checkpoint_is_refused_and_the_champion_stays(
    tmp_path: Path,
    panel: Panel,
    trained: GlobalLSTM,
    damage: Callable[[Path], None],
    reason: str,
) -> None:
    registry = Registry(tmp_path)
    good = save(registry, trained)
    registry.promote(good)
    served = registry.latest_champion()
    assert served is not None and served[0] == good
    bad = save(registry, trained)
    damage(registry.weights_path(bad))

    with pytest.raises(CheckpointError, match=reason) as err:
        registry.load(bad)
    assert f"v{bad:06d}" in str(err.value)  # names the file
    with pytest.raises(CheckpointError):
        registry.promote(bad)
    assert registry.champion() == good
    assert registry.latest_champion() is served

    # a pointer moved by hand to the bad version: the worker keeps serving what it has
    write_atomic(tmp_path / POINTER, json.dumps({"version": bad}).encode())
    with pytest.raises(CheckpointError):
        registry.latest_champion()
    np.testing.assert_array_equal(
        predict(registry.load(good), panel, panel.last_bucket),
        predict(served[1], panel, panel.last_bucket),
    )


def test_the_champion_reloads_only_when_the_pointer_moves(
    tmp_path: Path, trained: GlobalLSTM
) -> None:
    registry = Registry(tmp_path)
    assert registry.champion() is None and registry.latest_champion() is None
    first = save(registry, trained)
    registry.promote(first)
    served = registry.latest_champion()
    assert registry.latest_champion() is served
    second = save(registry, GlobalLSTM(CFG))
    assert registry.latest_champion() is served  # saved is not promoted
    registry.promote(second)
    now = registry.latest_champion()
    assert now is not None and now[0] == second and now is not served
    # another process reading the same directory sees the same champion
    assert Registry(tmp_path).champion() == second
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def test_an_unreadable_pointer_is_an_error_not_no_champion(tmp_path: Path) -> None:
    (tmp_path / POINTER).write_text("{not json")
    with pytest.raises(CheckpointError, match=POINTER):
        Registry(tmp_path).champion()


def test_a_checkpoint_from_before_the_tournament_loads_as_an_lstm(
    tmp_path: Path, panel: Panel, trained: GlobalLSTM
) -> None:
    registry = Registry(tmp_path)
    version = save(registry, trained)
    meta_path = registry.metadata_path(version)
    meta = json.loads(meta_path.read_text())
    for added in ("arch", "signals", "validation_stride"):  # newer than the checkpoint
        del meta["config"][added]
    meta_path.write_text(json.dumps(meta))
    loaded = registry.load(version)
    # it was validated at every origin, as every model was then
    assert type(loaded) is GlobalLSTM and loaded.cfg == replace(trained.cfg, validation_stride=1)
