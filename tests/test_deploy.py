"""The docker compose stack, Prometheus and Grafana agree with the worker's code.

Static checks only (no Docker needed): topics created by kafka-init, metric names used by the
dashboard, and the Prometheus scrape target.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry

from streamer.config import Settings, all_topics
from streamer.metrics import TRAINER_REGISTRY

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "shelfcast.json"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
SERVICES = {"kafka", "kafka-init", "redis", "worker", "prometheus", "grafana"}
METRIC = re.compile(r"\bshelfcast_[A-Za-z0-9_]+")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def env(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict (compose allows a mapping or a KEY=VALUE list)."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        return dict(item.split("=", 1) for item in raw)
    return {k: str(v) for k, v in raw.items()}


# --- docker-compose.yml ------------------------------------------------------------------------


def test_compose_has_every_service(compose: dict[str, Any]) -> None:
    missing = SERVICES - set(compose["services"])
    assert not missing, f"services missing from docker-compose.yml: {sorted(missing)}"


def test_kafka_runs_in_kraft_mode(compose: dict[str, Any]) -> None:
    kafka = env(compose["services"]["kafka"])
    roles = {r.strip() for r in kafka["KAFKA_PROCESS_ROLES"].split(",")}
    assert "controller" in roles
    assert "broker" in roles
    assert kafka.get("KAFKA_CONTROLLER_QUORUM_VOTERS")
    assert not any("ZOOKEEPER" in name for name in kafka)
    assert not any("zookeeper" in name for name in compose["services"])
    # topics exist only because kafka-init creates them
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def created_topics(compose: dict[str, Any]) -> dict[str, str]:
    """topic -> partitions argument of every `create <topic> <partitions>` in kafka-init."""
    command = compose["services"]["kafka-init"]["command"]
    script = "\n".join(command) if isinstance(command, list) else str(command)
    found = re.findall(r"^\s*create\s+(\S+)\s+(\S+)\s*$", script, flags=re.MULTILINE)
    return dict(found)


def test_kafka_init_creates_every_topic_the_worker_uses(compose: dict[str, Any]) -> None:
    created = created_topics(compose)
    expected = all_topics(Settings())
    assert set(expected) <= set(created), f"missing: {set(expected) - set(created)}"
    assert set(created) == set(expected), f"unexpected: {set(created) - set(expected)}"


def test_co_partitioned_inputs_get_the_same_partition_count(compose: dict[str, Any]) -> None:
    created = created_topics(compose)
    topics = Settings().topics
    assert created[topics["orders"]] == created[topics["inventory"]]


def test_worker_waits_for_its_dependencies_and_exposes_metrics(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    depends = worker["depends_on"]
    assert depends["kafka-init"]["condition"] == "service_completed_successfully"
    assert depends["kafka"]["condition"] == "service_healthy"
    assert depends["redis"]["condition"] == "service_healthy"
    settings = env(worker)
    assert settings["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert settings["REDIS_URL"].startswith("redis://redis:")
    assert settings["SHELFCAST_WEB_BIND"] == "0.0.0.0"  # reachable from the prometheus container
    assert str(settings["SHELFCAST_WEB_PORT"]) in {str(p) for p in worker["expose"]}


def test_published_ports_bind_localhost_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"


def test_bind_mounted_paths_exist(compose: dict[str, Any]) -> None:
    mounts = [
        volume.split(":")[0]
        for service in compose["services"].values()
        for volume in service.get("volumes", [])
        if isinstance(volume, str) and volume.startswith("./")
    ]
    assert mounts
    for path in mounts:
        assert (ROOT / path).exists(), path


# --- Grafana dashboard vs the worker's metrics -------------------------------------------------


def exprs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from exprs(item)


def exported_names(registry: CollectorRegistry = REGISTRY) -> set[str]:
    """Every sample name a registry can expose, including for labelled metrics that have no
    child yet (those produce no sample lines in generate_latest())."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created", ""),
        "gauge": ("",),
        "info": ("_info",),
        "stateset": ("",),
        "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    }
    names: set[str] = set()
    for family in registry.collect():
        for suffix in suffixes.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def dashboard_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return {name for expr in exprs(dashboard) for name in METRIC.findall(expr)}


def test_dashboard_queries_something() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert len(list(exprs(dashboard))) >= 5
    assert len(dashboard_metrics()) >= 5


def test_every_dashboard_metric_is_exported_by_the_worker_or_the_trainer() -> None:
    worker, trainer = exported_names(), exported_names(TRAINER_REGISTRY)
    missing = sorted(dashboard_metrics() - worker - trainer)
    assert not missing, f"dashboard queries metrics nobody exports: {missing}"
    # the trainer's own panels (LSTM version and training time) are on the dashboard
    assert {
        "shelfcast_lstm_champion_version", "shelfcast_lstm_training_seconds_sum",
        "shelfcast_lstm_served_version", "shelfcast_processing_latency_seconds_bucket",
        "shelfcast_consumer_lag_messages", "shelfcast_dlq_total",
    } <= dashboard_metrics()  # fmt: skip


def documented(section: str) -> dict[str, str]:
    """docs/metrics.md's table for ``section`` ("worker" or "trainer"): name -> type."""
    text = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    tables = dict(re.findall(r"^## (\w+)\n(.*?)(?=^## |\Z)", text, re.M | re.S))
    rows = re.findall(r"^\| `(shelfcast_\w+)` \| (\w+) \|", tables[section.title()], re.M)
    return dict(rows)


@pytest.mark.parametrize(
    ("section", "registry"), [("worker", REGISTRY), ("trainer", TRAINER_REGISTRY)]
)
def test_docs_list_every_metric_with_its_type(section: str, registry: CollectorRegistry) -> None:
    suffix = {"counter": "_total"}
    served = {
        f.name + suffix.get(f.type, ""): f.type
        for f in registry.collect()
        if f.name.startswith("shelfcast_")
    }
    assert documented(section) == served


def test_exported_names_follow_the_registry() -> None:
    """The name expansion above matches what generate_latest() prints for observed metrics."""
    from prometheus_client import generate_latest

    text = generate_latest(REGISTRY).decode()
    printed = {
        line.split("{")[0].split(" ")[0]
        for line in text.splitlines()
        if line.startswith("shelfcast_")
    }
    assert printed  # unlabelled metrics always print
    assert printed <= exported_names()
    assert "shelfcast_batch_duration_seconds_bucket" in printed
    assert "shelfcast_buckets_closed_total" in printed


# --- Prometheus --------------------------------------------------------------------------------


def test_prometheus_scrapes_the_worker() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    worker_jobs = [
        job
        for job in config["scrape_configs"]
        if any("worker:6066" in t for sc in job.get("static_configs", []) for t in sc["targets"])
    ]
    assert len(worker_jobs) == 1
    assert worker_jobs[0].get("metrics_path", "/metrics") == "/metrics"


def test_prometheus_target_port_is_the_worker_port(compose: dict[str, Any]) -> None:
    worker_port = env(compose["services"]["worker"])["SHELFCAST_WEB_PORT"]
    assert worker_port == str(Settings().web_port) == "6066"
    mounts = compose["services"]["prometheus"]["volumes"]
    assert any(
        str(m).startswith("./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml")
        for m in mounts
    )
