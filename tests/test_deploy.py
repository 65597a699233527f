"""The docker compose stack, Prometheus and Grafana agree with the worker's code.

Static checks only (no Docker needed): topics created by kafka-init, the security and scaling
defaults of the compose file, metric names used by the dashboard, and the Prometheus scrape
targets.
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

from streamer.config.settings import Settings, all_topics
from streamer.metrics import TRAINER_REGISTRY

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "shelfcast.json"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"
SERVICES = {"kafka", "kafka-init", "redis", "worker", "prometheus", "grafana"}
METRIC = re.compile(r"\bshelfcast_[A-Za-z0-9_]+")
# compose interpolation of a variable that must be set: ${NAME:?message} (or ${NAME?message})
REQUIRED = re.compile(r"^\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*):?\?[^}]*\}$")
SECRET = re.compile(r"PASSWORD|SECRET|TOKEN|_AUTH$", re.IGNORECASE)


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


def required_var(value: str) -> str | None:
    """The variable name if ``value`` is exactly a required interpolation, else None."""
    match = REQUIRED.match(value.strip())
    return match["name"] if match else None


def command_options(service: dict[str, Any]) -> dict[str, str]:
    """``--option value`` pairs of a service's command (a list, or one string split on blanks)."""
    command = service["command"]
    words = [str(w) for w in command] if isinstance(command, list) else str(command).split()
    return {
        word[2:]: words[i + 1]
        for i, word in enumerate(words[:-1])
        if word.startswith("--") and not words[i + 1].startswith("--")
    }


def host_binding(port: object) -> tuple[str, str]:
    """(host ip, host port) of a ``ports`` entry, short or long syntax; empty when absent."""
    if isinstance(port, dict):
        return str(port.get("host_ip", "")), str(port.get("published", ""))
    spec = str(port).split("/")[0]
    parts = spec.rsplit(":", 2)
    if len(parts) == 3:
        return parts[0], parts[1]
    if len(parts) == 2:
        return "", parts[0]
    return "", ""


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
    topics = Settings().kafka.topics
    assert created[topics["orders"]] == created[topics["inventory"]]


def test_worker_waits_for_its_dependencies_and_exposes_metrics(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    depends = worker["depends_on"]
    assert depends["kafka-init"]["condition"] == "service_completed_successfully"
    assert depends["kafka"]["condition"] == "service_healthy"
    assert depends["redis"]["condition"] == "service_healthy"
    settings = env(worker)
    assert settings["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert settings["REDIS_URL"].startswith("redis://")
    assert "@redis:6379/" in settings["REDIS_URL"] or settings["REDIS_URL"].startswith(
        "redis://redis:"
    )
    assert settings["SHELFCAST_WEB_BIND"] == "0.0.0.0"  # reachable from the prometheus container
    assert str(settings["SHELFCAST_WEB_PORT"]) in {str(p) for p in worker["expose"]}


def test_published_ports_bind_localhost_only(compose: dict[str, Any]) -> None:
    published = 0
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            published += 1
            assert host_binding(port)[0] == "127.0.0.1", f"{name}: {port}"
            if not isinstance(port, dict):
                assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"
    assert published >= 4  # kafka, prometheus, grafana, trainer, worker


def test_host_binding_reads_short_and_long_syntax() -> None:
    assert host_binding("127.0.0.1:6066:6066") == ("127.0.0.1", "6066")
    assert host_binding("127.0.0.1::6066") == ("127.0.0.1", "")
    assert host_binding("6066:6066/tcp") == ("", "6066")
    assert host_binding("6066") == ("", "")
    assert host_binding({"target": 6066, "host_ip": "127.0.0.1"}) == ("127.0.0.1", "")
    assert host_binding({"target": 6066, "published": "6066"}) == ("", "6066")


# --- security defaults -------------------------------------------------------------------------


def test_redis_requires_a_password_with_no_default(compose: dict[str, Any]) -> None:
    options = command_options(compose["services"]["redis"])
    assert required_var(options.get("requirepass", "")) == "REDIS_PASSWORD", options


def test_redis_never_evicts_and_fsyncs_every_write(compose: dict[str, Any]) -> None:
    options = command_options(compose["services"]["redis"])
    assert options.get("maxmemory-policy") == "noeviction"
    assert re.fullmatch(r"\$\{REDIS_MAXMEMORY:-\d+[kmg]b\}|\d+[kmg]b", options.get("maxmemory", ""))
    assert options.get("appendonly") == "yes"
    assert options.get("appendfsync") == "always"


def test_redis_healthcheck_authenticates_and_checks_the_reply(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert required_var(env(redis).get("REDISCLI_AUTH", "")) == "REDIS_PASSWORD"
    test = redis["healthcheck"]["test"]
    script = " ".join(str(word) for word in test)
    assert "redis-cli" in script
    # redis-cli exits 0 on an error reply such as NOAUTH: the exit code alone proves nothing
    assert "PONG" in script


def test_every_redis_client_gets_the_password(compose: dict[str, Any]) -> None:
    clients = {
        name: env(service)
        for name, service in compose["services"].items()
        if "REDIS_URL" in env(service)
    }
    assert {"worker", "trainer"} <= set(clients)
    for name, settings in clients.items():
        url, password = settings["REDIS_URL"], settings.get("REDIS_PASSWORD", "")
        in_url = re.match(r"^redis://:\$\{REDIS_PASSWORD(:?\?[^}]*)?\}@redis:6379/\d+$", url)
        assert in_url or required_var(password) == "REDIS_PASSWORD", f"{name}: {url}"


def test_grafana_has_no_default_password_and_no_anonymous_access(
    compose: dict[str, Any],
) -> None:
    grafana = env(compose["services"]["grafana"])
    assert required_var(grafana["GF_SECURITY_ADMIN_PASSWORD"]) == "GRAFANA_ADMIN_PASSWORD"
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"].lower() == "false"
    assert grafana["GF_USERS_ALLOW_SIGN_UP"].lower() == "false"
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in grafana
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"].lower() not in {"admin", "grafana", ""}


def test_no_secret_has_a_literal_or_default_value(compose: dict[str, Any]) -> None:
    """A password either comes from a required variable or is not in the file at all."""
    for name, service in compose["services"].items():
        for key, value in env(service).items():
            if SECRET.search(key):
                assert required_var(value), f"{name}: {key}={value!r} must be ${{VAR:?...}}"
    text = COMPOSE.read_text(encoding="utf-8")
    defaults = re.findall(r"\$\{(\w*(?:PASSWORD|SECRET|TOKEN)\w*):?-", text)
    assert not defaults, f"secrets with a default value: {defaults}"


def test_env_example_lists_every_required_variable_without_a_value() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    required = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?\?", text))
    assert {"REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD"} <= required
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    assert required <= set(example), f"missing from .env.example: {required - set(example)}"
    for name in required:
        # empty: compose refuses to start until the operator sets a real value
        assert example[name].strip() == "", f"{name} has a value in .env.example"
    assert "cp .env.example .env" in DEPLOYMENT_DOC.read_text(encoding="utf-8")


# --- scaling out -------------------------------------------------------------------------------


def test_the_worker_can_be_scaled(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker  # replicas need distinct names
    for port in worker.get("ports", []):
        # a fixed host port clashes as soon as a second replica starts
        assert host_binding(port)[1] == "", f"worker publishes a fixed host port: {port}"
    assert worker.get("deploy", {}).get("replicas", 1) >= 1
    # a volume mounted at the working directory would be one state dir shared by all replicas
    targets = [
        str(v).split(":")[1] if isinstance(v, str) else v["target"]
        for v in worker.get("volumes", [])
    ]
    assert "/var/lib/shelfcast" not in targets


def test_deployment_doc_explains_scaling_out_and_security() -> None:
    text = DEPLOYMENT_DOC.read_text(encoding="utf-8")
    headings = set(re.findall(r"^## (.+)$", text, re.MULTILINE))
    assert {"Scaling out", "Security defaults"} <= headings
    for needle in (
        "--scale worker=",
        "SHELFCAST_PARTITIONS",
        "SHELFCAST_REDIS_CLUSTER=true",
        "{p7}",
        "noeviction",
        "appendfsync always",
        "owner generation",
    ):
        assert needle in text, needle


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


def test_prometheus_scrapes_every_worker_replica() -> None:
    """By DNS: the service name resolves to one address per replica. A static worker:6066
    target would scrape whichever replica DNS answers with and mix their counters."""
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    worker_jobs = [
        job
        for job in config["scrape_configs"]
        if any("worker" in sd.get("names", []) for sd in job.get("dns_sd_configs", []))
    ]
    assert len(worker_jobs) == 1
    job = worker_jobs[0]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    (sd,) = job["dns_sd_configs"]
    assert sd["type"] == "A"
    assert sd["port"] == 6066
    static = [t for sc in job.get("static_configs", []) for t in sc["targets"]]
    assert not any(t.startswith("worker:") for t in static)


def test_prometheus_scrapes_the_trainer() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    targets = [
        t
        for job in config["scrape_configs"]
        for sc in job.get("static_configs", [])
        for t in sc["targets"]
    ]
    assert "trainer:6067" in targets


def test_prometheus_target_port_is_the_worker_port(compose: dict[str, Any]) -> None:
    worker_port = env(compose["services"]["worker"])["SHELFCAST_WEB_PORT"]
    assert worker_port == str(Settings().web_port) == "6066"
    mounts = compose["services"]["prometheus"]["volumes"]
    assert any(
        str(m).startswith("./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml")
        for m in mounts
    )
