"""``shelfcast report``: charts and the HTML page from a real backtest of the shipped sample."""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from pathlib import Path

import pytest

from streamer.cli import build_parser, main
from streamer.ops.backtest import truth_from
from streamer.ops.replay import read_events
from streamer.ops.report import load, one_step, stock_levels, top_series, write_report
from tests.conftest import SAMPLE, sample_backtest

LIMIT = 3000  # Dec 2010 to early Jan 2011 of the shipped sample
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def backtest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_backtest(tmp_path_factory.mktemp("backtest"), LIMIT)


@pytest.fixture(scope="module")
def report(backtest: Path) -> Path:
    return write_report(backtest)


def test_html_references_every_chart(report: Path) -> None:
    assert report.name == "index.html" and report.parent.name == "report"
    page = report.read_text()
    pngs = sorted(p.name for p in report.parent.glob("*.png"))
    assert pngs == sorted(
        [
            "forecast_vs_actual.png", "error_by_week.png", "alerts_vs_stock.png",
            "fill_rate_vs_stock.png",
        ]
    )  # fmt: skip
    assert sorted(re.findall(r'<img src="([^"]+)"', page)) == pngs
    assert page.count("<figcaption>") == len(pngs)
    # self-contained: nothing fetched from elsewhere
    assert "http" not in page.replace("http-equiv", "")
    for text in (
        "seasonal naive", "coverage", "recall", "false alarms", "LSTM refreshes",
        "beyond the series&#x27; history", "foreseeable", "fill rate / stock, min_max",
        "fill rate / stock, perfect_foresight",
    ):  # fmt: skip
        assert text in page
    assert "Stock was simulated" in page and "lead time days 3" in page


def test_charts_are_real_pngs(report: Path) -> None:
    for png in report.parent.glob("*.png"):
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC), png
        assert len(data) > 10_000, png


def test_top_chart_matches_the_input(backtest: Path) -> None:
    data = load(backtest)
    picked = top_series(data.steps, data.demand, 5)
    assert len(picked) == 5
    # computed here from the input independently of the report's loading
    events, _ = read_events(SAMPLE, LIMIT)
    truth = truth_from(events, 86_400)
    by_sku: dict[str, float] = defaultdict(float)
    for (series, _), y in truth.demand.items():
        by_sku[series.partition("@")[0]] += y
    assert picked[0] == f"{max(by_sku, key=by_sku.__getitem__)}@*"
    forecasts = {}
    for line in (backtest / "forecasts.jsonl").open():
        f = json.loads(line)
        forecasts.setdefault(f["forecast_id"].rsplit("|", 1)[0], f)
    chart = one_step(picked[0], data.steps, data.demand, data.closed)
    sku = picked[0].partition("@")[0]
    compared = 0
    for day, actual, mean, p10, p90 in zip(
        chart.days, chart.actual, chart.mean, chart.p10, chart.p90, strict=True
    ):
        if day in truth.closed:
            assert math.isnan(actual)
            continue
        assert actual == sum(
            y for (s, b), y in truth.demand.items() if b == day and s.partition("@")[0] == sku
        )
        fc = forecasts.get(f"{picked[0]}|{day - 1}")
        if fc is None:
            assert math.isnan(mean)
            continue
        step = fc["horizon"][0]
        assert (mean, p10, p90) == (step["mean"], step["p10"], step["p90"])
        compared += 1
    assert compared > 20


def test_stock_replay_agrees_with_the_simulation(backtest: Path) -> None:
    data = load(backtest)
    outs = data.trace.stockouts[:5]
    assert outs
    for series, ts in outs:
        times, levels = stock_levels(data.events, series)
        assert any(levels[k] <= 0 < levels[k - 1] for k, t in enumerate(times) if t == ts and k), (
            series
        )


def test_report_help() -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["report", "--help"])
    assert exit_.value.code == 0


def test_report_without_summary_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no summary.json" in err and "shelfcast backtest" in err


def test_report_command_writes_where_asked(
    backtest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r" / "page.html"
    assert main(["report", str(backtest), "--out", str(out), "--top", "2"]) == 0
    assert str(out) in capsys.readouterr().out
    assert (out.parent / "forecast_vs_actual.png").stat().st_size > 10_000


def test_a_closed_loop_summary_shows_the_loop_and_no_open_loop_alert_scores(
    report: Path,
) -> None:
    from streamer.ops.report import key_numbers

    summary = json.loads((report.parent.parent / "summary.json").read_text())
    loop = dict(summary["inventory"]["policies"]["shelfcast"])
    closed = {
        **summary, "alert_quality": None,
        "inventory": {**summary["inventory"], "closed_loop": loop},
    }  # fmt: skip
    labels = [label for label, _ in key_numbers(closed)]
    assert "fill rate / stock, closed loop" in labels
    assert not any("recall" in label for label in labels)
