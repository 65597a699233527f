"""examples/consume.py: validates, checks the contract version and drops copies by id."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
from confluent_kafka import Producer

from streamer.ops.embedded import MockKafkaCluster
from tests.conftest import ROOT

FORECAST = {
    "schema_version": "1.0",
    "forecast_id": "85123A@United Kingdom|15016|seasonal_naive@2",
    "sku": "85123A",
    "location": "United Kingdom",
    "issued_at": "2011-02-12T00:00:00Z",
    "bucket": "1d",
    "horizon": [
        {"start": "2011-02-12T00:00:00Z", "mean": 3.0, "p10": 1.0, "p50": 3.0, "p90": 5.0},
        {"start": "2011-02-13T00:00:00Z", "mean": 2.0, "p10": 0.0, "p50": 2.0, "p90": 4.0},
    ],
    "model": "seasonal_naive",
    "model_version": "2",
    "locations": None,
}
ALERT = {
    "schema_version": "1.3",
    "alert_id": "85123A@United Kingdom|1|raised",
    "sku": "85123A",
    "location": "United Kingdom",
    "status": "raised",
    "severity": "critical",
    "on_hand": 9,
    "reorder_point": 12.725,
    "lead_time_demand": 8.0,
    "safety_stock": 4.725,
    "days_of_cover": 2.25,
    "service_level": 0.95,
    "service_measure": "cycle",
    "lead_time_days": 3.0,
    "review_days": 7.0,
    "forecast_id": "85123A@United Kingdom|15016|seasonal_naive@2",
    "ts": "2011-02-12T10:30:00Z",
    "on_order": 0,
    "inventory_position": 9,
    "order_up_to": 40.725,
    "order_quantity": 36,
    "pack_size": 12,
}


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("consume", ROOT / "examples" / "consume.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def messages() -> list[tuple[str, bytes]]:
    later_minor = {**copy.deepcopy(FORECAST), "schema_version": "1.4", "added_later": True}
    later_minor["forecast_id"] = "85123A@United Kingdom|15017|seasonal_naive@2"
    return [
        ("forecasts", json.dumps(FORECAST).encode()),
        ("forecasts", json.dumps(FORECAST).encode()),  # a redelivered copy
        ("forecasts", json.dumps(later_minor).encode()),  # 1.4 with a new field: still read
        ("forecasts", json.dumps({**FORECAST, "schema_version": "2.0"}).encode()),
        ("forecasts", json.dumps({**FORECAST, "horizon": []}).encode()),  # invalid
        ("low-stock-alerts", json.dumps(ALERT).encode()),
        ("low-stock-alerts", b"{not json"),
        ("low-stock-alerts", json.dumps(ALERT).encode()),  # a redelivered copy
    ]


def reader(example: ModuleType) -> object:
    return example.Reader({t: example.load_schema(t) for t in example.TOPICS})


def test_reader_keeps_each_valid_message_once(example: ModuleType) -> None:
    r = reader(example)
    kept = [m for topic, value in messages() if (m := r.handle(topic, value)) is not None]
    assert [m.get("alert_id", m["forecast_id"]) for m in kept] == [
        FORECAST["forecast_id"], "85123A@United Kingdom|15017|seasonal_naive@2", ALERT["alert_id"],
    ]  # fmt: skip
    assert r.counts == {
        "forecasts": 2, "low-stock-alerts": 1, "duplicate": 2, "other_major": 1, "invalid": 1,
        "not_json": 1,
    }  # fmt: skip


def test_memory_of_ids_is_bounded(example: ModuleType) -> None:
    r = example.Reader({"forecasts": example.load_schema("forecasts")}, remember=2)
    for n in range(5):
        msg = {**FORECAST, "forecast_id": f"A@B|{n}|m@1"}
        assert r.handle("forecasts", json.dumps(msg).encode()) is not None
    assert len(r.seen) == 2


def test_consumes_from_a_real_broker(example: ModuleType) -> None:
    cluster = MockKafkaCluster(list(example.TOPICS), partitions=2)
    try:
        producer = Producer({"bootstrap.servers": cluster.bootstrap})
        for topic, value in messages():
            producer.produce(topic, value=value, key=b"85123A@United Kingdom")
        assert producer.flush(10) == 0
        lines: list[str] = []
        kept = example.consume(
            cluster.bootstrap, "test", reader(example), lines.append, 3, idle_seconds=20.0
        )
    finally:
        cluster.stop()
    assert kept == 3
    assert sum(line.startswith("forecast 85123A@United Kingdom") for line in lines) == 2
    assert any(line.startswith("alert 85123A@United Kingdom raised (critical)") for line in lines)


def test_without_kafka_it_says_what_to_do(
    example: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert example.main([]) == 2
    assert "--bootstrap" in capsys.readouterr().err
