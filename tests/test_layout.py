"""The package layout's rules (pyproject.toml, [tool.importlinter]; docs/architecture.md):
layers import downward only, the worker never imports the tooling, models know nothing of the
service, and no module is part of an import cycle."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from tests.conftest import ROOT


def test_every_import_contract_is_kept() -> None:
    config = ROOT / "pyproject.toml"
    contracts = tomllib.loads(config.read_text())["tool"]["importlinter"]["contracts"]
    lint = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run(
        [lint, "--config", config, "--no-cache"], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"Contracts: {len(contracts)} kept, 0 broken." in run.stdout
