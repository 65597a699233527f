"""What the component benchmarks in ``scripts/`` share: their output options, and how they
save a result (``DIR/NAME.json``, also printed as one JSON line)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["parser", "save"]


def parser(doc: str | None) -> argparse.ArgumentParser:
    """A script's parser, described by its docstring's first paragraph, with ``--out`` and
    ``--no-progress``."""
    ap = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("bench-out"), help="output folder")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    return ap


def save(out: Path, name: str, result: dict[str, object]) -> None:
    """Write ``result`` to ``out/NAME.json`` and print it."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
