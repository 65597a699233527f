import socket
import subprocess
import sys
from pathlib import Path

import pytest

from streamer.cli import build_parser, input_format, main, replay_summary
from streamer.config.settings import Settings
from streamer.ops.embedded import check_platform, free_port
from streamer.ops.replay import ReadStats
from tests.conftest import ROOT


@pytest.mark.parametrize(
    "command", [[], ["worker"], ["replay"], ["backtest"], ["demo"], ["report"], ["trainer"]]
)
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


def test_version_is_the_installed_one(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"shelfcast {version('shelfcast')}"


@pytest.mark.parametrize("command", [["data"], ["data", "fetch"], ["data", "path"]])
def test_data_commands_have_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--help"])
    assert capsys.readouterr().out.startswith("usage: shelfcast data")


def test_data_path_and_fetch_offline_say_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SHELFCAST_DATA_DIR", str(tmp_path))
    assert main(["data", "path"]) == 1
    out, err = capsys.readouterr()
    assert out.strip() == str(tmp_path / "online_retail.csv.gz")
    assert "shelfcast data fetch" in err
    assert main(["data", "fetch", "--url", "http://127.0.0.1:9/online+retail.zip"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 2  # "downloading ..." and the one line that says what to do
    assert f"put it in {tmp_path}/" in err


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_replay_of_an_unknown_header_is_one_line_and_a_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write(tmp_path / "s.csv", "Date,Item,Store,Qty\n2011-01-04,X,S,1\n")
    assert main(["replay", str(csv)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--columns ts=COL" in err
    bad_dates = write(tmp_path / "d.csv", "ts,sku,location,quantity\n12/1/2010 8:26,X,S,1\n")
    assert main(["replay", str(bad_dates)]) == 1
    assert "--date-format" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: exit 2 with the reason
        main(["replay", str(csv), "--columns", "when=Date"])
    assert "unknown role 'when'" in capsys.readouterr().err


def test_replay_and_backtest_take_the_input_options() -> None:
    for command in (["replay", "f.csv"], ["backtest", "f.csv", "--out", "o"]):
        args = build_parser().parse_args(
            [*command, "--columns", "ts=D,sku=I,location=S,quantity=Q", "--date-format", "%d/%m/%Y"]
        )
        how = input_format(args)
        assert how.format == "csv"  # --columns implies csv
        assert how.columns == {"ts": "D", "sku": "I", "location": "S", "quantity": "Q"}
        assert how.date_format == "%d/%m/%Y"


def test_replay_summary_counts_skips_by_reason_and_names_the_dlq() -> None:
    stats = ReadStats(lines=5, orders=2, returns=1, skipped={"zero quantity": 2}, format="csv")
    text = replay_summary(3, stats, 0, Settings.of(kafka_bootstrap_servers="k:9092"))
    assert (
        text.splitlines()[0] == "produced 3 events (2 orders, 1 returns) from 5 csv lines to k:9092"
    )
    assert "skipped 2 lines (zero quantity 2)" in text
    assert "'shelfcast-dlq'" in text


def test_a_bad_setting_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SHELFCAST_BUCKET_SECONDS", "abc")
    assert main(["worker"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "SHELFCAST_BUCKET_SECONDS='abc'" in err


def test_worker_with_kafka_but_no_redis_refuses_a_throwaway_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SHELFCAST_HOME", str(tmp_path))
    monkeypatch.setenv("SHELFCAST_WEB_PORT", str(free_port()))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert main(["worker"]) == 1
    err = capsys.readouterr().err
    assert "REDIS_URL" in err and "SHELFCAST_MIXED_SERVICES=1" in err
    assert not (tmp_path / "redis").exists()


def test_a_busy_metrics_port_is_one_line_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SHELFCAST_HOME", str(tmp_path))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        monkeypatch.setenv("SHELFCAST_WEB_PORT", str(busy.getsockname()[1]))
        assert main(["worker"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "SHELFCAST_WEB_PORT" in err
    assert not (tmp_path / "embedded.json").exists()  # nothing was started


def test_embedded_mode_off_linux_is_one_clear_message() -> None:
    with pytest.raises(RuntimeError) as err:
        check_platform("darwin")
    assert "Linux only" in str(err.value) and "KAFKA_BOOTSTRAP_SERVERS and REDIS_URL" in str(
        err.value
    )
    check_platform("linux")


@pytest.mark.parametrize("command", [["backtest", "orders.csv", "--out", "o"], ["demo"]])
def test_backtest_and_demo_run_the_closed_loop_unless_told_open_loop(command: list[str]) -> None:
    assert build_parser().parse_args(command).open_loop is False
    assert build_parser().parse_args([*command, "--open-loop"]).open_loop is True


def test_a_closed_loop_backtest_of_json_lines_without_times_names_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    orders = tmp_path / "orders.jsonl"
    orders.write_text('{"event_id": "a", "sku": "A1", "location": "UK", "quantity": 2}\n')
    assert main(["backtest", str(orders), "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    assert "--open-loop" in capsys.readouterr().err
