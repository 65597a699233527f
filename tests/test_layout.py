"""The package layout's rules (pyproject.toml, [tool.importlinter]; docs/architecture.md):
layers import downward only, the worker never imports the tooling, models know nothing of the
service, and no module is part of an import cycle."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

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


def modules() -> list[str]:
    return sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for package in ("streamer", "models")
        for path in (ROOT / package).rglob("*.py")
    )


@pytest.mark.parametrize("name", modules())
def test_every_module_says_what_it_exports(name: str) -> None:
    module = importlib.import_module(name)
    assert isinstance(module.__all__, list), f"{name} has no __all__"
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it does not define: {missing}"
