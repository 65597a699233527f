"""A fresh clone needs nothing beside it: no test, script, doc or --help text reads a data
folder outside the repository (the sibling `shared` checkout this project grew up next to)."""

from __future__ import annotations

import argparse
import re
import subprocess

import pytest

from streamer.cli import build_parser
from tests.conftest import ROOT

# Built in pieces so that this file does not match itself.
OUTSIDE = re.compile(r"\.\./" + "shared" + r"|" + "shared" + r"/data")
# Files owned by other changes still in flight; each is fixed there and then leaves this list.


def tracked(*patterns: str) -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *patterns],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:  # not a git checkout (an sdist): look at the files themselves
        return [str(p.relative_to(ROOT)) for pat in patterns for p in ROOT.glob(pat)]
    return out.stdout.split()


def test_no_file_refers_outside_the_repository() -> None:
    files = tracked(
        "tests/**", "scripts/**", "docs/*.md", "examples/**", "*.md", "streamer/*.py",
        "Dockerfile", "docker-compose*.yml", ".ci/**", "deploy/**",
    )  # fmt: skip
    assert "tests/test_scaleout.py" in files and "README.md" in files
    offenders = []
    for name in sorted(files):
        path = ROOT / name
        if path.suffix == ".gz" or not path.is_file():
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{name}:{n}: {line.strip()}")
    assert not offenders, "use `shelfcast data fetch` / `shelfcast data path`:\n" + "\n".join(
        offenders
    )


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update({f"{name} {k}": v for k, v in subcommands(sub).items()})
    return found


@pytest.mark.parametrize("name", sorted(subcommands(build_parser())))
def test_no_help_text_refers_outside_the_repository(name: str) -> None:
    help_text = subcommands(build_parser())[name].format_help()
    assert not OUTSIDE.search(help_text), help_text


def test_the_data_the_tests_replay_is_in_the_repository() -> None:
    from tests.conftest import SAMPLE
    from tests.worker_harness import HEAD_DATA

    for path in (SAMPLE, HEAD_DATA):
        assert path.is_file() and ROOT in path.resolve().parents
        assert (path.parent / "README.md").is_file()  # licence and citation beside it
        assert "CC BY 4.0" in (path.parent / "README.md").read_text(encoding="utf-8")
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").lstrip().startswith("Apache License")
