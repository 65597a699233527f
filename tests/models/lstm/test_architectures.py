"""One conformance suite over every global model, as river's ``checks/`` runs over its
estimators: what the trainer, the registry and a worker's serving rely on."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models.lstm.architectures import MODELS, build
from models.lstm.kinds import Architecture
from models.lstm.network import GlobalModel, LSTMConfig, Panel, inputs_of
from models.lstm.registry import Registry
from tests.models.conftest import DEVICE

TINY = LSTMConfig(seq_len=28, hidden=8, epochs=2, windows_per_epoch=512, batch_size=128)
EVERY = list(Architecture)


def trained(arch: Architecture, panel: Panel, seed: int = 0, device: str = DEVICE) -> GlobalModel:
    cfg = replace(TINY, arch=arch, seed=seed)
    model = build(cfg)
    model.fit(panel, cfg, device, panel.last_bucket - 27, None)
    return model.place(device)


def windows(panel: Panel, model: GlobalModel, at: int) -> np.ndarray:
    """Quantiles of every series' window ending at column ``at``."""
    rows = np.arange(len(panel.series))
    return model.forecast(inputs_of(model, panel, rows, np.full(len(rows), at)))


def test_every_architecture_is_built_by_its_name() -> None:
    assert set(MODELS) == set(Architecture)
    for arch in EVERY:
        assert build(replace(TINY, arch=arch)).cfg.arch is arch


@pytest.mark.parametrize("arch", EVERY)
def test_quantiles_are_ascending_non_negative_and_zero_when_closed(
    arch: Architecture, panel: Panel
) -> None:
    model = trained(arch, panel)
    at = panel.demand.shape[1] - 8
    q = windows(panel, model, at)
    assert q.shape == (len(panel.series), TINY.horizon, len(TINY.quantiles))
    assert np.isfinite(q).all() and (q >= 0).all()
    assert (np.diff(q, axis=2) >= 0).all()
    closed_ahead = panel.closed[at + 1 : at + 1 + TINY.horizon]
    assert closed_ahead.any(), "the sample must close a day in the week ahead"
    assert (q[:, closed_ahead] == 0).all()
    assert q[:, ~closed_ahead].sum() > 0  # it learned something


@pytest.mark.parametrize("arch", EVERY)
def test_a_forecast_reads_nothing_after_its_origin(arch: Architecture, panel: Panel) -> None:
    model = trained(arch, panel)
    at = panel.demand.shape[1] - 20
    before = windows(panel, model, at)
    later = Panel(
        panel.series, panel.demand.copy(), panel.price.copy(), panel.closed, panel.weekday,
        panel.first_bucket,
    )  # fmt: skip
    later.demand[:, at + 1 :] *= 7
    later.price[:, at + 1 :] = 99.0
    np.testing.assert_array_equal(windows(later, model, at), before)


@pytest.mark.parametrize("arch", EVERY)
def test_training_is_repeatable_given_the_seed(arch: Architecture, panel: Panel) -> None:
    at = panel.demand.shape[1] - 8  # on the CPU: cuDNN's kernels may sum in another order
    first, again = trained(arch, panel, device="cpu"), trained(arch, panel, device="cpu")
    np.testing.assert_allclose(windows(panel, first, at), windows(panel, again, at), rtol=1e-6)


@pytest.mark.parametrize("arch", EVERY)
def test_a_checkpoint_forecasts_as_the_model_did(
    arch: Architecture, panel: Panel, tmp_path: Path
) -> None:
    model = trained(arch, panel)
    registry = Registry(tmp_path, DEVICE)
    version = registry.save(model)
    assert registry.weights_path(version).name.endswith(model.suffix)
    loaded = registry.load(version)
    assert loaded.cfg == model.cfg and type(loaded) is type(model)
    at = panel.demand.shape[1] - 8
    np.testing.assert_allclose(windows(panel, loaded, at), windows(panel, model, at), rtol=1e-6)


@pytest.mark.parametrize("arch", EVERY)
def test_warm_starts_only_from_its_own_kind(arch: Architecture, panel: Panel) -> None:
    model = trained(arch, panel)
    torch_model = arch is not Architecture.LIGHTGBM  # trees always train from scratch
    assert build(model.cfg).warm_from(model) is torch_model
    for other in EVERY:
        if other is not arch:
            assert not build(replace(TINY, arch=other)).warm_from(model)
    assert not build(replace(model.cfg, hidden=4)).warm_from(model)


def test_the_fusion_model_reads_the_skus_other_locations(panel: Panel) -> None:
    fusion = trained(Architecture.CNN_LSTM, panel)
    plain = trained(Architecture.LSTM, panel)
    at = panel.demand.shape[1] - 8
    rows = np.flatnonzero(panel.siblings[:, 0] >= 0)
    assert len(rows) > 0, "the sample has SKUs sold in several countries"
    sibling = panel.siblings[rows[0], 0]
    louder = Panel(
        panel.series, panel.demand.copy(), panel.price, panel.closed, panel.weekday,
        panel.first_bucket,
    )  # fmt: skip
    louder.demand[sibling, : at + 1] *= 10
    for model, moves in ((fusion, True), (plain, False)):
        before, after = windows(panel, model, at)[rows[0]], windows(louder, model, at)[rows[0]]
        assert (not np.allclose(before, after)) is moves
