"""The current state of a series out of Redis: ``series_status``, ``shelfcast status`` and the
worker's ``/series/{sku}``, ``/healthz`` and ``/readyz``, over real services."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Producer

from streamer import cli
from streamer.config.settings import Settings, all_topics
from streamer.ingest.status import kafka_partition, render, series_status
from streamer.ops.embedded import MockKafkaCluster
from streamer.testing import Harness, alerts, forecasts, order
from tests.conftest import new_redis, redis_client
from tests.streamer.pipeline.test_batch import at, stocked_and_selling
from tests.worker_harness import Worker, stopping, wait_until

# the integration tests of the feature store: on one Redis and on a Redis Cluster
pytestmark = pytest.mark.cluster


def status(h: Harness, sku: str, location: str | None = None) -> list[dict]:
    return h.loop.run_until_complete(series_status(h.client, h.settings, sku, location))


def latest(outputs: list[tuple[str, dict]], series: str) -> dict:
    sku, location = series.split("@")
    mine = [f for f in forecasts(outputs) if (f["sku"], f["location"]) == (sku, location)]
    return max(mine, key=lambda f: f["issued_at"])


def test_status_holds_the_latest_forecast_stock_reorder_point_and_alert(
    settings: Settings,
) -> None:
    h = Harness(settings)
    burst = stocked_and_selling(h)
    raised = alerts(h.feed([*burst, h.record(order("tail", at(9, 13), 20))]))
    assert [a["status"] for a in raised] == ["raised"]
    [entry] = status(h, "A1")
    published = latest(h.outputs, "A1@UK")
    assert entry["series"] == "A1@UK" and entry["location"] == "UK"
    assert entry["forecast"] == published  # the message as it went out, byte for byte
    assert entry["reorder_point"]["forecast_id"] == published["forecast_id"]
    assert entry["reorder_point"]["service_measure"] == "cycle"  # text, as the alerts carry it
    assert entry["alert"] == {"status": "raised", "seq": 1, "ts": raised[0]["ts"]}
    r = redis_client(settings.redis.url, decode_responses=True)
    assert entry["stock"]["on_hand"] == float(r.hget("shelfcast:{p0}:s:A1@UK:state", "on_hand"))
    assert entry["stock"]["known"] and entry["stock"]["on_hand"] <= entry["reorder_point"]["rop"]
    text = render([entry])
    assert (
        "A1@UK" in text
        and f"raised (#1, {raised[0]['ts']})" in text
        and published["forecast_id"] in text
    )


def test_status_finds_each_location_of_a_sku_and_only_what_is_asked(settings: Settings) -> None:
    h = Harness(settings)
    records = [
        h.record(order(f"{loc}-{d}", at(d), 4, location=loc))
        for d in range(12)
        for loc in ("UK", "France", "EIRE")
    ]
    h.feed([*records, h.record(order("glob", at(3), 1, sku="A1*", location="UK"))])
    assert [e["series"] for e in status(h, "A1")] == ["A1@EIRE", "A1@France", "A1@UK"]
    [france] = status(h, "A1", "France")
    assert france["forecast"] == latest(h.outputs, "A1@France")
    assert france["stock"] == {"on_hand": None, "known": False, "lead_time_days": None}
    assert france["alert"] is None
    assert status(h, "A1", "Narnia") == [] and status(h, "NOPE") == []
    # a SKU with glob characters in it matches literally
    assert [e["series"] for e in status(h, "A1*")] == ["A1*@UK"]


def test_forecasts_kept_are_bounded_by_the_active_series(settings: Settings) -> None:
    h = Harness(settings.replace(active_buckets=5))
    h.feed([h.record(order("once", at(0), 3, sku="QUIET"))])
    h.feed([h.record(order(f"d{d}", at(d), 5)) for d in range(1, 15)])
    r = redis_client(settings.redis.url, decode_responses=True)
    assert r.hkeys("shelfcast:{p0}:forecast") == ["A1@UK"]
    assert status(h, "QUIET") == []


def test_status_command_prints_text_and_json(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    h = Harness(settings)
    h.feed([h.record(order(f"d{d}", at(d), 5)) for d in range(12)])
    monkeypatch.setenv("REDIS_URL", settings.redis.url)
    assert cli.main(["status", "A1", "--location", "UK"]) == 0
    assert "A1@UK" in capsys.readouterr().out
    assert cli.main(["status", "A1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["series"][0]["forecast"] == latest(
        h.outputs, "A1@UK"
    )
    assert cli.main(["status", "NOPE"]) == 1
    assert "no active series of SKU 'NOPE'" in capsys.readouterr().err


def test_kafka_partition_is_where_librdkafkas_murmur2_partitioner_puts_a_key(
    kafka: MockKafkaCluster,
) -> None:
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "partitioner": "murmur2"})
    n = len(producer.list_topics("orders", timeout=10).topics["orders"].partitions)
    placed: dict[str, int] = {}
    for i in range(40):
        key = f"SKU-{i}"
        producer.produce(
            "orders", key=key.encode(), value=b"{}",
            on_delivery=lambda err, msg, key=key: placed.__setitem__(key, msg.partition()),
        )  # fmt: skip
    producer.flush(10)
    assert len(set(placed.values())) > 1
    assert placed == {key: kafka_partition(key, n) for key in placed}


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_worker_serves_series_health_and_readiness(tmp_path: Path) -> None:
    kafka = MockKafkaCluster(all_topics(Settings()), partitions=2)
    server = new_redis(tmp_path / "redis")
    server.start()
    worker = Worker(kafka.bootstrap, server.url, tmp_path / "home", SHELFCAST_PARTITIONS="2")
    with stopping(kafka, server, worker):
        worker.start()
        base = f"http://127.0.0.1:{worker.env['SHELFCAST_WEB_PORT']}"
        producer = Producer({"bootstrap.servers": kafka.bootstrap, "partitioner": "murmur2"})
        for d in range(12):
            producer.produce("orders", key=b"A1", value=order(f"d{d}", at(d), 5))
        producer.flush(10)
        r = redis_client(server.url)
        p = kafka_partition("A1", 2)
        wait_until(lambda: r.hlen(f"shelfcast:{{p{p}}}:forecast") > 0, 60, "a forecast", worker)
        wait_until(lambda: get(base + "/readyz")[0] == 200, 30, "ready", worker)
        code, body = get(base + "/series/A1?location=UK")
        assert code == 200 and body["series"][0]["partition"] == p
        assert body["series"][0]["forecast"]["forecast_id"].startswith("A1@UK|")
        assert get(base + "/series/NOPE")[0] == 404
        assert get(base + "/healthz") == (200, {"status": "ok"})
        server.stop()  # Redis gone: still alive, no longer ready
        code, body = get(base + "/readyz")
        assert code == 503 and body["checks"] == {"redis": False, "kafka": True}
        assert get(base + "/healthz")[0] == 200
