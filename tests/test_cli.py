import subprocess
import sys

import pytest

from streamer.cli import build_parser, main
from tests.conftest import ROOT


@pytest.mark.parametrize("command", [[], ["worker"], ["replay"], ["backtest"], ["demo"]])
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: shelfcast")
    assert "--help" in out


def test_console_script_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0 and "backtest" in out.stdout


def test_replay_without_kafka_says_what_to_do(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("SHELFCAST_HOME", str(tmp_path))
    (tmp_path / "o.jsonl").write_text("{}\n")
    assert main(["replay", str(tmp_path / "o.jsonl")]) == 2
    assert "KAFKA_BOOTSTRAP_SERVERS" in capsys.readouterr().err


def test_missing_file_is_a_clear_error(capsys: pytest.CaptureFixture[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert main(["backtest", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_bad_numbers_are_refused() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["replay", "f", "--rate", "-3"])
