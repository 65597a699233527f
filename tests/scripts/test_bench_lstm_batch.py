"""scripts/bench_lstm_batch.py, run as a user runs it, on the shipped sample."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, SAMPLE

SCRIPT = [sys.executable, str(ROOT / "scripts" / "bench_lstm_batch.py"), "--data", str(SAMPLE)]


def test_each_setting_trains_a_refresh_and_is_recorded(tmp_path: Path) -> None:
    done = subprocess.run(
        [*SCRIPT, "--device", "cpu", "--epochs", "1", "--settings", "64,128:0.01:8",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "bench_lstm_batch.json").read_text())
    rows = result["settings"]
    assert [(r["batch_size"], r["lr"], r["hidden"]) for r in rows] == [
        (64, 0.003, 32), (128, 0.01, 8),
    ]  # fmt: skip
    for r in rows:
        assert r["epochs"] == 1 and r["windows_per_second"] > 0 and r["validation_mae"] > 0
        assert r["peak_device_mib"] is None  # a CPU has no device memory to report
    assert result["device"] == "cpu"


def test_a_malformed_setting_names_the_format() -> None:
    done = subprocess.run(
        [*SCRIPT, "--settings", "256:0.01:32:9"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "expected BATCH[:LR[:HIDDEN]]" in done.stderr
