"""The LSTM in a running pipeline: served from the registry, hot-swapped, bad versions refused."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace

import pytest
import torch

from models.lstm.architectures import build
from models.lstm.kinds import Architecture
from models.lstm.network import GlobalLSTM, LSTMConfig
from models.lstm.registry import Registry
from models.signals import SIGNALS
from streamer.config.settings import Settings
from streamer.publish.messages import Output
from streamer.testing import Harness, forecasts, order
from tests.streamer.pipeline.test_batch import Crash, at

TINY = LSTMConfig(seq_len=7, hidden=4, epochs=1)


def model(seed: int) -> GlobalLSTM:
    torch.manual_seed(seed)
    return GlobalLSTM(TINY)


def days(h: Harness, first: int, last: int) -> list:
    return [
        h.record(order(f"{loc}-{d}", at(d, 10 + i), 3 + (d + i) % 4, location=loc))
        for d in range(first, last)
        for i, loc in enumerate(("UK", "FR"))
    ]


def test_the_champion_is_served_scored_and_swapped_without_a_restart(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry(settings.models_path())
    registry.promote(registry.save(model(1)))
    h = Harness(settings)
    h.feed(days(h, 0, 20))
    assert h.pipeline.lstm.serving is not None and h.pipeline.lstm.serving[0] == 1
    lstm = h.pipeline.evaluation.summary()["lstm"]
    assert lstm["points"] > 0  # issued at every close, scored as its buckets closed
    bank = h.pipeline.banks[0]
    lstm_model = bank.models[bank.names.index("lstm")]
    assert lstm_model.version == "v1"

    # the trainer promotes v2: the next close serves it, no restart
    registry.promote(registry.save(model(2)))
    h.feed(days(h, 20, 22))
    assert h.pipeline.lstm.serving[0] == 2 and lstm_model.version == "v2"

    # v3 is promoted, then its file is damaged before the worker loads it: refused, v2 serves
    registry.promote(registry.save(model(3)))
    registry.weights_path(3).write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.ERROR, logger="streamer.serving.lstm"):
        out = h.feed(days(h, 22, 25))
    assert h.pipeline.lstm.serving[0] == 2
    refusals = [r.getMessage() for r in caplog.records if "refusing" in r.getMessage()]
    assert len(refusals) == 1 and "v000003" in refusals[0] and "still serving v2" in refusals[0]
    assert all(
        f["model_version"].endswith("+v2")
        for t, f in out
        if t == "forecasts" and f["model"] == "combined"
    )


def test_without_a_champion_the_worker_runs_on_its_other_models(settings: Settings) -> None:
    h = Harness(settings)
    h.feed(days(h, 0, 12))
    assert h.pipeline.lstm.serving is None
    assert "lstm" not in h.pipeline.evaluation.summary()


def test_a_retried_close_republishes_with_the_lstm_version_it_first_used(
    settings: Settings,
) -> None:
    registry = Registry(settings.models_path())
    registry.promote(registry.save(model(1)))
    h = Harness(settings)
    records = days(h, 0, 16)
    h.feed(records[:-2])

    async def deliver_then_die(batch: list[Output]) -> None:
        await Harness.sink(h, batch)
        if any(o.topic == "forecasts" for o in batch):
            raise Crash  # delivered; the close was never recorded

    h.pipeline.sink = deliver_then_die
    with contextlib.suppress(Crash):
        h.feed(records[-2:])
    first = forecasts(h.outputs)
    bucket = first[-1]["issued_at"]
    first = [f for f in first if f["issued_at"] == bucket]
    assert first
    registry.promote(registry.save(model(2)))  # the trainer promotes meanwhile
    h.restart()
    h.outputs.clear()
    h.feed(records[-2:])  # Kafka redelivers: the close is retried
    again = [f for f in forecasts(h.outputs) if f["issued_at"] == bucket]
    assert again == first  # same ids, same content: v1, not v2
    bank = h.pipeline.banks[0]  # the LSTM it offered the bank at the retry
    assert bank.models[bank.names.index("lstm")].version == "v1"
    h.feed([h.record(order("UK-late", at(17), 3))])
    assert h.pipeline.lstm.serving[0] == 2  # the next close serves the new champion


@pytest.mark.parametrize("arch", [a for a in Architecture if a is not Architecture.LIGHTGBM])
def test_every_network_is_served_and_reads_the_signals_a_worker_keeps(
    settings: Settings, arch: Architecture
) -> None:
    settings = settings.replace(lstm_signals=True)  # the workers keep them
    registry = Registry(settings.models_path())
    registry.promote(registry.save(build(replace(TINY, arch=arch, signals=True))))
    h = Harness(settings)
    seen = []
    steps = h.pipeline.lstm.steps

    def spy(*args: object) -> object:
        seen.append(args[-1])  # the signals the close read for it
        return steps(*args)

    h.pipeline.lstm.steps = spy  # type: ignore[method-assign]
    h.feed([
        h.record(order(f"{loc}-{d}", at(d, 10 + i), 2 + d % 3, location=loc, customer=f"c{d % 4}"))
        for d in range(0, 12)
        for i, loc in enumerate(("UK", "FR"))
    ])  # fmt: skip
    assert h.pipeline.evaluation.summary()["lstm"]["points"] > 0
    assert seen and all(s is not None and s.shape[2] == len(SIGNALS) for s in seen)
    assert max(float(s[..., 0].max()) for s in seen) == 1.0  # one buyer a day per series
    h.close()


def test_a_late_order_and_a_lost_partition_drop_the_kept_lstm_window(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window kept between closes (streamer/serving/window.py) holds closed buckets: an
    order that lands in one, or another worker's writes while the partition was away, must
    make the next close read it whole."""
    registry = Registry(settings.models_path())
    registry.promote(registry.save(model(1)))
    h = Harness(settings)
    h.feed(days(h, 0, 12))
    windows = h.pipeline.lstm.windows
    forgotten: list[int] = []
    forget = windows.forget
    monkeypatch.setattr(windows, "forget", lambda p: (forgotten.append(p), forget(p)))
    h.feed([h.record(order("UK-on-time", at(12), 2))])
    assert forgotten == []  # an order of the open bucket changes no kept bucket
    h.feed([h.record(order("UK-late", at(5), 3))])  # day 5 closed days ago
    assert forgotten == [0]
    h.pipeline.revoke([0])
    h.feed([h.record(order("UK-after", at(13), 2))])  # the next batch drops what it lost
    assert forgotten == [0, 0]
