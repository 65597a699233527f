"""Security hygiene: credentials from the environment, never printed; local-only HTTP."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest
import redis

from streamer.config.security import redact
from streamer.config.settings import Settings, all_topics
from streamer.ops.embedded import EmbeddedRedis, MockKafkaCluster
from streamer.testing import order
from tests.conftest import ROOT
from tests.worker_harness import Worker, wait_until

SECRET = "s3cret-Pa55"


def test_kafka_sasl_ssl_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "sasl_ssl")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "shelfcast")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("REDIS_PASSWORD", SECRET)
    sec = Settings.from_env().kafka.security
    conf = sec.confluent()
    assert conf["security.protocol"] == "sasl_ssl"
    assert conf["sasl.mechanisms"] == "SCRAM-SHA-512" and conf["sasl.password"] == SECRET
    creds = sec.faust_credentials()
    assert type(creds).__name__ == "SASLCredentials"
    assert creds.ssl_context is not None  # type: ignore[union-attr]
    settings = Settings.from_env().replace(redis_url=f"redis://:{SECRET}@h:6379/0")
    assert SECRET not in repr(settings) and SECRET not in repr(sec)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "KAFKA_SASL_USERNAME"),
        ({"KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM"),
    ],
)
def test_bad_security_settings_are_refused_clearly(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match=message):
        Settings.from_env()


def test_redact_masks_passwords_in_urls() -> None:
    assert SECRET not in redact(f"rediss://default:{SECRET}@redis.internal:6380/0")
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_no_secret_in_logs_or_metrics_and_http_is_local(tmp_path: Path) -> None:
    kafka = MockKafkaCluster(all_topics(Settings()), partitions=2)
    server = EmbeddedRedis(tmp_path / "redis", password=SECRET)
    server.start()
    worker = Worker(kafka.bootstrap, server.url, tmp_path / "home", SHELFCAST_LOG_LEVEL="debug")
    try:
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(server.url.replace(SECRET, "wrong")).ping()
        worker.start()
        port = worker.env["SHELFCAST_WEB_PORT"]
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": kafka.bootstrap})
        producer.produce("orders", key=b"A1@UK", value=order("e1", "2011-01-04T10:00:00", 3))
        producer.produce("orders", key=b"A1@UK", value=b"{broken")
        producer.flush(10)
        client = redis.Redis.from_url(server.url)
        wait_until(
            lambda: int(client.hget("shelfcast:stats", "events_done") or 0) >= 2, 60, "2", worker
        )
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    finally:
        worker.stop()
        server.stop()
        kafka.stop()
    assert b"shelfcast_events_total" in metrics
    assert SECRET.encode() not in metrics
    assert SECRET not in worker.log.read_text()
    assert Settings().web_bind == "127.0.0.1"


def test_nothing_deserialises_untrusted_bytes_with_code_execution() -> None:
    sources = [*ROOT.glob("streamer/**/*.py"), *ROOT.glob("models/**/*.py")]
    for path in sources:
        text = path.read_text()
        assert not re.search(r"\bpickle\.loads?\(|\bmarshal\.loads?\(|(?<!\.)\beval\(", text), path
        for call in _calls(text, "torch.load("):
            assert "weights_only=True" in call, (path, call)


def _calls(text: str, opening: str) -> list[str]:
    """Each call that starts with ``opening``, up to its matching parenthesis."""
    calls = []
    for match in re.finditer(re.escape(opening), text):
        depth, end = 0, match.start()
        for end in range(match.end() - 1, len(text)):
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            if depth == 0:
                break
        calls.append(text[match.start() : end + 1])
    return calls
