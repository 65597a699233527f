"""scripts/bench_lstm_batch.py, run as a user runs it, on the shipped sample."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, SAMPLE

SCRIPT = [sys.executable, str(ROOT / "scripts" / "bench_lstm_batch.py"), "--data", str(SAMPLE)]


def test_each_setting_and_seed_trains_a_refresh_and_their_mean_is_scored(tmp_path: Path) -> None:
    done = subprocess.run(
        [*SCRIPT, "--device", "cpu", "--epochs", "1", "--settings", "64,128:0.01:8",
         "--seeds", "0,1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "bench_lstm_batch.json").read_text())
    rows = result["settings"]
    assert [(r["batch_size"], r["lr"], r["hidden"], r["seed"]) for r in rows] == [
        (64, 0.003, 32, 0), (64, 0.003, 32, 1), (64, 0.003, 32, "mean of 2"),
        (128, 0.01, 8, 0), (128, 0.01, 8, 1), (128, 0.01, 8, "mean of 2"),
    ]  # fmt: skip
    for r in rows:
        assert r["epochs"] == 1 and r["validation_mae"] > 0 and r["pinball"] > 0
        if isinstance(r["seed"], int):
            assert r["windows_per_second"] > 0
            assert r["peak_device_mib"] is None  # a CPU has no device memory to report
    for seeds, mean in ((rows[0:2], rows[2]), (rows[3:5], rows[5])):
        assert seeds[0]["validation_mae"] != seeds[1]["validation_mae"]  # the seeds differ
        assert mean["validation_mae"] not in {s["validation_mae"] for s in seeds}
    assert result["device"] == "cpu"


def test_a_malformed_setting_names_the_format() -> None:
    done = subprocess.run(
        [*SCRIPT, "--settings", "256:0.01:32:9"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "expected BATCH[:LR[:HIDDEN]]" in done.stderr
