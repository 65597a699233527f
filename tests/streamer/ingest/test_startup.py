"""A worker whose Kafka or Redis is unreachable says which address, retries, then exits."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamer.ops.embedded import MockKafkaCluster, free_port
from tests.conftest import ROOT


@pytest.mark.parametrize("down", ["kafka", "redis"])
def test_unreachable_service_at_start_is_named_and_the_worker_exits_non_zero(
    down: str, kafka: MockKafkaCluster, redis_url: str, tmp_path: Path
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "REDIS_"))}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=dead if down == "kafka" else kafka.bootstrap,
        REDIS_URL=f"redis://{dead}/0" if down == "redis" else redis_url,
        SHELFCAST_HOME=str(tmp_path),
        SHELFCAST_STARTUP_TIMEOUT_SECONDS="4",
        SHELFCAST_WEB_PORT=str(free_port()),
    )
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "worker"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - started
    assert proc.returncode == 3
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    name = "Kafka" if down == "kafka" else "Redis"
    assert lines[0].startswith(f"shelfcast worker: cannot reach {name} at ") and dead in lines[0]
    assert "retrying for up to 4s" in lines[0]
    assert lines[-1].startswith(f"shelfcast worker: giving up: {name} at ") and dead in lines[-1]
    assert len(lines) == 2, proc.stderr  # one line, then the verdict: no stack trace
    assert 4 <= took < 30
