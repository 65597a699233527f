"""``shelfcast``: the command line. Every command has ``--help``."""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import signal
import socket
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from models.series import ALL_LOCATIONS, is_rollup, series_key
from streamer.config.settings import Settings
from streamer.data import SAMPLE
from streamer.ops.replay import FORMATS, InputFormat, ReadStats, parse_columns

__all__ = [
    "ENV_HELP",
    "TRAINER_ENV_HELP",
    "Subcommands",
    "add_input_options",
    "build_parser",
    "cmd_backtest",
    "cmd_bench",
    "cmd_data",
    "cmd_offsets",
    "cmd_replay",
    "cmd_report",
    "cmd_status",
    "cmd_trainer",
    "cmd_worker",
    "explain",
    "input_format",
    "main",
    "port_problem",
    "print_accuracy",
    "print_alert_quality",
    "print_policies",
    "replay_summary",
    "version",
]

ENV_HELP = """environment:
  KAFKA_BOOTSTRAP_SERVERS  Kafka brokers (host:port,...); unset = embedded mock cluster
  REDIS_URL                Redis URL; unset = embedded redis-server
  SHELFCAST_HOME           state folder (default .shelfcast)
  SHELFCAST_STARTUP_TIMEOUT_SECONDS  how long the worker waits for Kafka and Redis (60)
  SHELFCAST_MIXED_SERVICES  1: allow one service embedded and the other real (0)
  Kafka SASL/SSL and Redis password/TLS settings: README.md, Configuration"""
TRAINER_ENV_HELP = """environment:
  REDIS_URL                the workers' Redis (required; or a `shelfcast worker` running here)
  SHELFCAST_PARTITIONS     partitions to read, as the workers' (8)
  SHELFCAST_MODEL_DIR      checkpoint registry shared with the workers (SHELFCAST_HOME/models)
  SHELFCAST_TRAIN_MINUTES  minutes between refreshes (60)
  SHELFCAST_TRAINER_PORT   /metrics port (6067)
  SHELFCAST_LSTM_SEQ_LEN, SHELFCAST_LSTM_HIDDEN, SHELFCAST_LSTM_EPOCHS,
  SHELFCAST_LSTM_WARM_EPOCHS, SHELFCAST_LSTM_WINDOWS_PER_EPOCH, SHELFCAST_LSTM_SIGNALS,
  SHELFCAST_LSTM_BFLOAT16, SHELFCAST_LSTM_BATCH_SIZE, SHELFCAST_LSTM_LR
                           model overrides (docs/lstm.md)
  SHELFCAST_TORCH_THREADS  CPU threads for torch (1)"""


def _positive(kind: type, allow_zero: bool = False) -> object:
    def parse(text: str) -> object:
        value = kind(text)
        if value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"must be {'>=' if allow_zero else '>'} 0, got {text}")
        return value

    return parse


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("shelfcast")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed: pip install -e .)"


def _columns(text: str) -> dict[str, str]:
    try:
        return parse_columns(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--columns: ")) from exc


def add_input_options(p: argparse.ArgumentParser) -> None:
    """How to read the input file: shared by replay and backtest."""
    group = p.add_argument_group("input file")
    group.add_argument(
        "--format",
        choices=FORMATS,
        help="online-retail: the UCI Online Retail CSV; jsonl: JSON lines in the 'orders' "
        "contract; csv: any CSV with a header (default: guessed from the first line)",
    )
    group.add_argument(
        "--columns",
        type=_columns,
        default={},
        metavar="ROLE=COL,...",
        help="CSV columns for ts, sku, location, quantity, and optionally unit_price, "
        "customer_id, order_id, event_id, e.g. 'ts=Order Date,sku=Item,location=Store,"
        "quantity=Qty' (default: columns named like the roles)",
    )
    group.add_argument(
        "--date-format",
        metavar="FMT",
        help="strptime format of the date column, e.g. '%%d/%%m/%%Y %%H:%%M' (default: ISO 8601 "
        "or epoch seconds/ms; Online Retail: its own layouts)",
    )


def input_format(args: argparse.Namespace) -> InputFormat:
    fmt = args.format or ("csv" if args.columns else None)
    return InputFormat(fmt, args.columns, args.date_format)


Subcommands = argparse._SubParsersAction  # add_subparsers' type: argparse has no public name for it


def _number(
    p: argparse.ArgumentParser | argparse._ArgumentGroup,
    flag: str,
    kind: type,
    default: float,
    text: str,
    allow_zero: bool = False,
) -> None:
    """A positive number option (or at least 0 with ``allow_zero``) with a default."""
    p.add_argument(flag, type=_positive(kind, allow_zero), default=default, help=text)


def _command(
    sub: Subcommands,
    name: str,
    run: Callable[..., int],
    epilog: str | None = None,
    raw: bool = False,
) -> argparse.ArgumentParser:
    """The subcommand ``name``, its ``--help`` from ``run``'s docstring: the first line is its
    summary, the rest its description (one paragraph)."""
    summary, _, details = inspect.cleandoc(run.__doc__ or "").partition("\n\n")
    return sub.add_parser(
        name,
        help=summary[0].lower() + summary[1:].rstrip("."),
        description=" ".join(details.split()),
        epilog=epilog,
        formatter_class=(
            argparse.RawDescriptionHelpFormatter if epilog or raw else argparse.HelpFormatter
        ),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shelfcast",
        description="Real-time demand forecasts and low-stock alerts from an order stream.",
        epilog=ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"shelfcast {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _worker_parser(sub)
    _replay_parser(sub)
    _backtest_parsers(sub)
    _trainer_parser(sub)
    _bench_parser(sub)
    _report_parser(sub)
    _status_parser(sub)
    _offsets_parser(sub)
    _data_parser(sub)
    return parser


def _worker_parser(sub: Subcommands) -> None:
    _command(sub, "worker", cmd_worker, epilog=ENV_HELP)


def _replay_parser(sub: Subcommands) -> None:
    rp = _command(sub, "replay", cmd_replay, epilog=ENV_HELP)
    rp.add_argument(
        "file", type=Path, help="CSV or JSON lines, optionally gzipped (.gz); see --format"
    )
    add_input_options(rp)
    pace = rp.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=_positive(float), help="events per second")
    pace.add_argument(
        "--speedup", type=_positive(float), help="replay event time N times faster than real"
    )
    rp.add_argument("--limit", type=_positive(int), help="read at most N lines")
    rp.add_argument(
        "--simulate-stock", action="store_true", help="also produce simulated inventory events"
    )
    rp.add_argument("--no-progress", action="store_true", help="no progress bar")


# Two workers close partitions on two cores, where one worker's closes share one interpreter
# lock; more did not pay on two cores (docs/benchmark.md)
BACKTEST_WORKERS = min(2, os.cpu_count() or 1)


def _backtest_parsers(sub: Subcommands) -> None:
    """``backtest`` and ``demo``: the same run, on a file or on the shipped sample."""
    for name, text in (
        ("backtest", "replay a file through a worker on embedded services and score it"),
        ("demo", "run a backtest on the real-data sample shipped in the repo and explain it"),
    ):
        p = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        if name == "backtest":
            p.add_argument(
                "file", type=Path, help="orders file (Online Retail CSV, JSON lines or CSV)"
            )
            p.add_argument("--out", type=Path, required=True, help="output folder")
            add_input_options(p)
        else:
            p.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder")
            p.add_argument(
                "--keep-running",
                action="store_true",
                help="keep the worker and its /metrics endpoint up until Ctrl-C",
            )
        p.add_argument("--limit", type=_positive(int), help="read at most N lines")
        p.add_argument(
            "--workers",
            type=_positive(int),
            default=BACKTEST_WORKERS,
            help="workers in one consumer group, each closing its share of the partitions in "
            "a process of its own: the outputs are the same with any number "
            "(2, or 1 on a single core)",
        )
        _simulation_options(p)
        _number(p, "--timeout", float, 1800.0, "seconds to wait (1800)")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _simulation_options(p: argparse.ArgumentParser) -> None:
    sim = p.add_argument_group("simulated stock (the data has none; docs/alerts.md)")
    _number(sim, "--lead-time-days", float, 3.0, "delivery lead time (3)")
    _number(sim, "--opening-weeks", float, 4.0, "opening stock (4)")
    _number(
        sim, "--reorder-days", float, 7.0,
        "reorder when stock + on order falls to this many days of demand (7)",
    )  # fmt: skip
    _number(sim, "--order-up-to-days", float, 21.0, "order up to this many days of demand (21)")
    _number(
        sim, "--large-orders", float, 1.0,
        "every stock level also holds this many of the series' large orders "
        "(95th percentile of its order sizes) (1)",
        allow_zero=True,
    )  # fmt: skip
    sim.add_argument(
        "--open-loop",
        action="store_true",
        help="restock by the simulation's own rule (--reorder-days, --order-up-to-days) "
        "and score the alerts against its stock-outs, instead of the closed loop: a "
        "simulated planner that orders what each raised alert recommends, delivered "
        "--lead-time-days later, the replay going a day at a time (docs/alerts.md)",
    )


def _trainer_parser(sub: Subcommands) -> None:
    tp = _command(sub, "trainer", cmd_trainer, epilog=TRAINER_ENV_HELP)
    tp.add_argument(
        "--once", action="store_true", help="one refresh, print its record as JSON, and exit"
    )
    tp.add_argument(
        "--through",
        type=int,
        metavar="BUCKET",
        help="with --once: train on the data up to this bucket "
        "(default: the last bucket every partition has closed)",
    )
    tp.add_argument(
        "--every-minutes",
        type=_positive(float),
        metavar="N",
        help="minutes between refreshes, start to start (SHELFCAST_TRAIN_MINUTES, 60)",
    )
    tp.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        help="where to train (default: cuda when available, else cpu)",
    )


def _bench_parser(sub: Subcommands) -> None:
    bp = _command(sub, "bench", cmd_bench, epilog=ENV_HELP)
    bp.add_argument(
        "file",
        type=Path,
        nargs="?",
        help="Online Retail CSV: the path `shelfcast data path` prints (not with --close-only)",
    )
    bp.add_argument(
        "--close-only",
        action="store_true",
        help="time the bucket close alone on --series synthetic series, no FILE",
    )
    _number(bp, "--series", int, 100_000, "series in the --close-only run (100000)")
    _number(bp, "--closes", int, 5, "timed closes of --close-only (5)")
    bp.add_argument(
        "--workers",
        type=_positive(int),
        help="processes closing a share of the partitions each in the --close-only run, as a "
        f"backtest's workers (default {BACKTEST_WORKERS} here: 2, or 1 on a single core; at "
        "most the partitions)",
    )
    bp.add_argument("--out", type=Path, default=Path("bench-out"), help="output folder")
    _number(
        bp, "--lines", int, 60_000, "order lines in the backlog (60000: Dec 2010 to mid-Jan 2011)"
    )
    _number(
        bp, "--burst", int, 40_000, "orders produced at once within one bucket, each round (40000)"
    )
    _number(
        bp, "--rounds", int, 3,
        "bursts, each timed against a bare consumer and a Faust agent doing nothing run "
        "right after it; the figures are the rounds' medians (3)",
    )  # fmt: skip
    _number(bp, "--rate", float, 2000.0, "orders/s in the latency phase (2000)")
    _number(bp, "--seconds", float, 15.0, "length of the latency phase (15)")
    bp.add_argument("--no-progress", action="store_true", help="no progress bars")


def _report_parser(sub: Subcommands) -> None:
    rep = _command(sub, "report", cmd_report)
    rep.add_argument("dir", type=Path, help="a folder written by `shelfcast backtest` or `demo`")
    rep.add_argument(
        "--out", type=Path, help="HTML file to write, charts beside it (DIR/report/index.html)"
    )
    _number(rep, "--top", int, 5, "SKUs in the forecast chart (5)")


def _status_parser(sub: Subcommands) -> None:
    sp = _command(sub, "status", cmd_status)
    sp.add_argument("sku", help="the SKU, as in the orders' `sku` field")
    sp.add_argument("--location", help="one location only (default: every active location)")
    sp.add_argument("--json", action="store_true", help="print JSON, as /series/SKU serves it")


def _offsets_parser(sub: Subcommands) -> None:
    op = _command(sub, "offsets", cmd_offsets)
    osub = op.add_subparsers(dest="offsets_command", required=True, metavar="ACTION")
    osub.add_parser("check", help="print Redis's and Kafka's offsets (exit 1 if Redis is behind)")
    rewind = osub.add_parser(
        "rewind", help="move the group's offsets back to Redis's (workers stopped)"
    )
    rewind.add_argument(
        "--accept-loss",
        action="store_true",
        help="rewind to the oldest offset the log holds where it no longer holds Redis's",
    )


def _data_parser(sub: Subcommands) -> None:
    dp = _command(sub, "data", cmd_data, raw=True)
    dsub = dp.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    fetch = dsub.add_parser(
        "fetch",
        help="download, convert and verify the data set (once)",
        description="Download the data set into SHELFCAST_DATA_DIR, verify it, print its path.",
    )
    fetch.add_argument("--url", default=None, help="where to download from (UCI)")
    _number(fetch, "--timeout", float, 60.0, "network timeout in s (60)")
    dsub.add_parser(
        "path",
        help="print the data set's path (exit 1 if it is not fetched yet)",
        description="Print the data set's path; exit 1 if `shelfcast data fetch` has not run.",
    )


def port_problem(bind: str, port: int) -> str | None:
    """Why the worker could not serve /metrics on ``bind:port``, or None."""
    with socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET) as probe:
        # as the web server binds: a port left in TIME_WAIT by a stopped worker is free
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((bind, port))
        except OSError as exc:
            return (
                f"cannot serve /metrics on {bind}:{port} ({exc.strerror or exc}): another "
                "process holds it; set SHELFCAST_WEB_PORT to a free port (or "
                "SHELFCAST_WEB_BIND to another address)"
            )
    return None


def cmd_worker(settings: Settings) -> int:
    """Run the Faust worker (embedded Kafka and Redis unless configured).

    Consume 'orders' and 'inventory', keep demand features in Redis, close daily buckets by
    event time, publish 'forecasts', 'low-stock-alerts' and 'shelfcast-dlq', and serve
    Prometheus metrics on /metrics. Stop with Ctrl-C.
    """
    from streamer.ingest.app import run_worker
    from streamer.ingest.startup import Unreachable, wait_until_reachable
    from streamer.ops.embedded import STATE_FILE, embedded_services

    embedded = not (settings.kafka.bootstrap_servers and settings.redis.url)
    if problem := port_problem(settings.web_bind, settings.web_port):
        print(f"shelfcast worker: {problem}", file=sys.stderr)
        return 2
    with embedded_services(settings) as live:
        try:
            wait_until_reachable(live)
        except Unreachable as exc:
            print(f"shelfcast worker: giving up: {exc}", file=sys.stderr)
            return 3
        if embedded:
            print(
                "shelfcast: embedded services: "
                f"KAFKA_BOOTSTRAP_SERVERS={live.kafka.bootstrap_servers} "
                f"REDIS_URL={live.redis.url}\n"
                f"shelfcast: other commands here find them through {live.home / STATE_FILE}; "
                f"metrics at http://{live.web_bind}:{live.web_port}/metrics",
                flush=True,
            )
        run_worker(live)
    return 0


def cmd_trainer(args: argparse.Namespace, settings: Settings) -> int:
    """Refresh the global LSTM from the workers' Redis on a schedule.

    Read every series' history from the workers' Redis, train an LSTM candidate, validate it
    against the champion and the seasonal naive, save it as the next checkpoint version in
    SHELFCAST_MODEL_DIR and promote it only if it wins (docs/lstm.md). Serves Prometheus
    metrics on SHELFCAST_WEB_BIND:SHELFCAST_TRAINER_PORT (6067) /metrics. Stop with Ctrl-C.
    """
    import redis

    from models.lstm.registry import CheckpointError
    from streamer.config.security import redact
    from streamer.ops.embedded import discover
    from streamer.trainer.service import run_once, run_trainer

    if args.through is not None and not args.once:
        print("shelfcast trainer: --through needs --once", file=sys.stderr)
        return 2
    settings = discover(settings)
    if not settings.redis.url:
        print(
            "shelfcast trainer: no Redis to read. Set REDIS_URL to the workers' Redis, or start "
            "`shelfcast worker` in this folder first (the trainer finds its embedded Redis "
            "through .shelfcast/embedded.json); `docker compose up` runs the trainer service "
            "with its Redis. The trainer never starts a Redis of its own: an empty one has "
            "nothing to train on.",
            file=sys.stderr,
        )
        return 2
    try:
        if not args.once:
            run_trainer(settings, args.every_minutes or settings.trainer.minutes, args.device)
            return 0
        record, _ = run_once(settings, args.through, device=args.device)
    except redis.RedisError as exc:
        print(f"shelfcast trainer: Redis at {redact(settings.redis.url)}: {exc}", file=sys.stderr)
        return 1
    except (CheckpointError, OSError) as exc:
        print(f"shelfcast trainer: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(record, indent=2))
    return 0


def _discovered(settings: Settings, command: str, what: str, variable: str) -> Settings | None:
    """The settings with the services of a ``shelfcast worker`` running embedded in this
    folder where none are configured; None, having said how to fix it, when the one
    ``variable`` names is still unknown."""
    from streamer.ops.embedded import discover

    found = discover(settings)
    if found.kafka.bootstrap_servers if variable.startswith("KAFKA") else found.redis.url:
        return found
    print(
        f"shelfcast {command}: no {what}. Set {variable}, or start `shelfcast worker` in this "
        "folder first (it writes .shelfcast/embedded.json).",
        file=sys.stderr,
    )
    return None


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    """Produce order events from a file.

    Produce order events keyed by SKU from the Online Retail CSV layout, from JSON lines in
    the 'orders' contract, or from your own CSV (--columns, --date-format). Finds a running
    embedded worker by itself. Ends with the events produced, the lines skipped by reason,
    and where rejected events go (the DLQ topic).
    """
    from streamer.ops.replay import produce, read_events
    from streamer.ops.simulation import SimulationSettings, simulate

    # the file first: a layout problem is worth knowing before any service is up
    events, stats = read_events(args.file, args.limit, input_format(args))
    if (
        found := _discovered(settings, "replay", "Kafka to produce to", "KAFKA_BOOTSTRAP_SERVERS")
    ) is None:
        return 2
    settings = found
    simulated = 0
    if args.simulate_stock:
        read = len(events)
        events, _, _ = simulate(events, SimulationSettings())
        simulated = len(events) - read
    n = produce(
        settings.kafka.bootstrap_servers,
        settings.kafka.security.confluent(),
        settings.kafka.topics,
        events,
        rate=args.rate,
        speedup=args.speedup,
        progress=not args.no_progress,
        total=len(events),
    )
    print(replay_summary(n, stats, simulated, settings))
    return 0


def replay_summary(n: int, stats: ReadStats, simulated: int, settings: Settings) -> str:
    """What a replay did: events produced, lines skipped by reason, where rejects go."""
    made = f"{stats.orders} orders, {stats.returns} returns"
    if stats.adjustments:
        made += f", {stats.adjustments} stock adjustments"
    if simulated:
        made += f", {simulated} simulated inventory events"
    skipped = sum(stats.skipped.values())
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(stats.skipped.items(), key=lambda kv: -kv[1]))
    return (
        f"produced {n} events ({made}) from {stats.lines} {stats.format} lines to "
        f"{settings.kafka.bootstrap_servers}\n"
        f"skipped {skipped} lines{f' ({reasons})' if reasons else ''}\n"
        f"the worker sends each event it rejects, with the reason, to topic "
        f"'{settings.kafka.topics['dlq']}' on the same Kafka (schemas/shelfcast-dlq.schema.json)"
    )


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Print a SKU's latest forecast, stock, reorder point and alert.

    Print the current state of a SKU's series as the workers keep it in Redis: the latest
    published forecast, stock on hand, reorder point and alert. Reads REDIS_URL, or the
    Redis of a `shelfcast worker` running in this folder. A running worker serves the same
    as JSON on /series/SKU.
    """
    import asyncio

    from streamer.features.connect import worker_client
    from streamer.ingest.status import render, series_status

    if (found := _discovered(settings, "status", "Redis to read", "REDIS_URL")) is None:
        return 2
    settings = found

    async def read() -> list[dict[str, object]]:
        r = worker_client(settings)
        try:
            return await series_status(r, settings, args.sku, args.location)
        finally:
            await r.aclose()

    entries = asyncio.run(read())
    if not entries:
        where = f" at location {args.location!r}" if args.location is not None else ""
        print(
            f"shelfcast status: no active series of SKU {args.sku!r}{where} (no order in the "
            f"last SHELFCAST_ACTIVE_BUCKETS={settings.models.active_buckets} buckets, or a typo)",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(json.dumps({"sku": args.sku, "series": entries}, indent=2))
    else:
        print(render(entries))
    return 0


def cmd_offsets(args: argparse.Namespace, settings: Settings) -> int:
    """Compare the input offsets in Redis with the consumer group's in Kafka; rewind.

    The workers commit their Kafka input only after Redis holds its effects, so Redis's
    offsets are never behind the consumer group's unless Redis lost acknowledged writes (a
    restart without AOF, a failover, an eviction); a worker that finds so stops. `check`
    prints both per input partition (exit 1 when Redis is behind); `rewind` moves the
    group's committed offsets back to Redis's, so the workers replay what Redis lost. Stop
    every worker first: Kafka refuses to move the offsets of a group in use. Reads
    KAFKA_BOOTSTRAP_SERVERS and REDIS_URL.
    """
    from streamer.features.connect import connect
    from streamer.pipeline import offsets

    if not settings.kafka.bootstrap_servers or not settings.redis.url:
        print(
            "shelfcast offsets: set KAFKA_BOOTSTRAP_SERVERS and REDIS_URL to the services the "
            "workers use (an embedded worker's state starts empty with its broker)",
            file=sys.stderr,
        )
        return 2
    partitions = range(settings.kafka.partitions)
    with connect(settings, socket_connect_timeout=10) as client:
        stored = offsets.stored(client, partitions)
    committed = offsets.committed(settings, partitions)
    found = offsets.gaps(stored, committed)
    if args.offsets_command == "check":
        return _offsets_check(stored, committed, {g.field for g in found})
    if not found:
        print("shelfcast offsets: Redis is not behind Kafka anywhere; nothing to rewind")
        return 0
    return _offsets_rewind(settings, stored, committed, [g.field for g in found], args.accept_loss)


def _offsets_check(stored: dict[str, int], committed: dict[str, int], behind: set[str]) -> int:
    """Print both offsets of every input partition; 1 where Redis is behind anywhere."""
    for field in sorted(stored.keys() | committed.keys()):
        mark = "  <- Redis behind" if field in behind else ""
        kafka = committed.get(field, "-")
        print(f"{field:<24} redis {stored.get(field, 0):>12} kafka {kafka:>12}{mark}")
    return 1 if behind else 0


def _offsets_rewind(
    settings: Settings,
    stored: dict[str, int],
    committed: dict[str, int],
    behind: list[str],
    accept_loss: bool,
) -> int:
    """Move the group's offsets of the ``behind`` partitions back to Redis's."""
    from streamer.features.connect import connect
    from streamer.pipeline import offsets

    low = offsets.low_watermarks(settings, behind)
    targets, lost = offsets.rewind_plan(stored, committed, low)
    if lost and not accept_loss:
        gone = ", ".join(f"{f} ({n} records)" for f, n in sorted(lost.items()))
        print(
            f"shelfcast offsets: the log no longer holds what Redis lost in {gone}: those "
            "numbers cannot be made exact again. Rewind anyway to the oldest records held "
            "with --accept-loss",
            file=sys.stderr,
        )
        return 1
    offsets.commit(settings, targets)
    if lost:  # Redis counts from the oldest records held, or every worker would halt again
        with connect(settings, socket_connect_timeout=10) as client:
            offsets.skip_to(client, {f: targets[f] for f in lost})
    for field, offset in sorted(targets.items()):
        print(f"{field}: committed {committed[field]} -> {offset}")
    print("shelfcast offsets: rewound; start the workers to replay from Redis's offsets")
    return 0


def cmd_data(args: argparse.Namespace, settings: Settings) -> int:
    """Download the full UCI Online Retail data set, or print where it is.

    The repository ships slices of the UCI Online Retail data set (CC BY 4.0); the
    benchmarks read the full year. `fetch` downloads it from UCI into SHELFCAST_DATA_DIR
    (default ~/.cache/shelfcast), converts UCI's spreadsheet to the CSV layout `replay`
    reads, checks its sha256 and prints its path; offline, it says where to put the file by
    hand. `path` prints where it is.
    """
    from streamer.ops.dataset import FILE_NAME, UCI_URL, DataError, fetch

    target = settings.data_dir / FILE_NAME
    if args.data_command == "path":
        print(target)
        if not target.is_file():
            print(
                "shelfcast data path: not fetched yet: run `shelfcast data fetch`",
                file=sys.stderr,
            )
            return 1
        return 0
    try:
        path = fetch(
            settings.data_dir,
            url=args.url or UCI_URL,
            timeout=args.timeout,
            say=lambda line: print(line, file=sys.stderr),
        )
    except DataError as exc:
        print(f"shelfcast data fetch: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


def cmd_backtest(args: argparse.Namespace, settings: Settings, path: Path) -> int:
    from streamer.ops.backtest import run_backtest
    from streamer.ops.simulation import SimulationSettings

    sim = SimulationSettings(
        opening_weeks=args.opening_weeks,
        lead_time_days=args.lead_time_days,
        reorder_days=args.reorder_days,
        order_up_to_days=args.order_up_to_days,
        large_orders=args.large_orders,
    )
    settings = settings.replace(lead_time_days=args.lead_time_days)
    result = run_backtest(
        path,
        args.out,
        settings,
        sim,
        limit=args.limit,
        progress=not args.no_progress,
        timeout=args.timeout,
        keep_running=getattr(args, "keep_running", False),
        how=input_format(args) if args.command == "backtest" else None,
        closed_loop=not args.open_loop,
        workers=args.workers,
    )
    s = result.summary
    print_accuracy(s)
    print_policies(s["inventory"])  # type: ignore[arg-type]
    q = s["alert_quality"]
    if q is not None and q["stockouts"]:  # type: ignore[index]
        print_alert_quality(q)  # type: ignore[arg-type]
    files = "forecasts.jsonl, alerts.jsonl, policies.jsonl" + (", stockouts.jsonl" if q else "")
    print(f"results: {result.out}/summary.json, {files}")
    if args.command == "demo":
        explain(result.out)
        urls, n = ", ".join(result.metrics_urls), len(result.metrics_urls)
        snapshots = "metrics.prom" if n == 1 else f"metrics.prom to metrics-{n - 1}.prom"
        print(
            f"metrics: the workers served {urls} while they ran; a snapshot of each is in "
            f"{result.out}: {snapshots} (use --keep-running to keep them up)"
        )
        from streamer.ops.report import write_report

        print(f"report: {write_report(result.out)}")
    return 0


def print_accuracy(s: dict) -> None:
    """The run's totals, then each model's errors, alone and relative to the two baselines."""
    print(
        f"\n{s['events_in']} events ({s['dlq']} to the DLQ), {s['series']} series, "
        f"{s['buckets_closed']} series-buckets closed, {s['forecasts_published']} forecasts, "
        f"{s['alerts_published']} alerts in {s['wall_seconds']}s ({s['events_per_second']} ev/s)"
    )
    print(f"{'':<42}{'÷ seasonal naive':>24}{'÷ zeros':>16}")
    print(
        f"{'model':<18}{'MAE':>8}{'RMSE':>8}{'MASE':>8}{'MAE':>8}{'RMSE':>8}{'pinball':>8}"
        f"{'MAE':>8}{'RMSE':>8}{'cover':>8}"
    )
    for model, m in s["accuracy"].items():
        print(
            f"{model:<18}{m['mae']:>8.3f}{m['rmse']:>8.3f}{m['mase']:>8.3f}"
            f"{m['rel_mae_vs_seasonal_naive']:>8.3f}{m['rel_rmse_vs_seasonal_naive']:>8.3f}"
            f"{m['rel_pinball_vs_seasonal_naive']:>8.3f}{m['rel_mae_vs_zeros']:>8.3f}"
            f"{m['rel_rmse_vs_zeros']:>8.3f}{m['coverage_p10_p90']:>8.1%}"
        )


def print_alert_quality(q: dict) -> None:
    """How the alerts foretold the simulated stock-outs, and why the missed ones were missed."""
    warn = q["median_warning_days"]
    print(
        f"alerts vs simulated stock: {q['stockouts']} stock-outs, recall "
        f"{q['recall']:.1%} (raised >= {q['lead_time_days']:g} days ahead), median warning "
        f"{'n/a' if warn is None else f'{warn:.1f} days'}, false alarms "
        f"{q['false_alarm_rate'] or 0:.1%}, flapping {q['flapping_rate'] or 0:.1%}, "
        f"an alert raised {q.get('alert_active_share') or 0:.1%} of the time"
    )
    m = q["misses"]
    foreseeable = m["recall_foreseeable"]
    print(
        f"missed: {m['series_too_young']} in a series' first lead time, "
        f"{m['cleared_before']} cleared before it, {m['beyond_history']} beyond the "
        f"series' history, {m['raised_late']} raised late; recall over the foreseeable "
        f"{'n/a' if foreseeable is None else f'{foreseeable:.1%}'} (docs/alerts.md)"
    )


def _share(value: float | None) -> str:
    return "n/a (no setting holds that stock)" if value is None else f"{value:.1%}"


def print_policies(inventory: dict) -> None:
    """Fill rate against stock held, per reorder policy on the same demand."""
    rows = [("closed loop", inventory["closed_loop"])] if "closed_loop" in inventory else []
    rows += list(inventory["policies"].items())
    print(f"{'reorder policy':<20}{'fill rate':>10}{'stock, days':>13}{'orders':>8}")
    for name, p in rows:
        print(f"{name:<20}{p['fill_rate']:>10.1%}{p['mean_on_hand_days']:>13.1f}{p['orders']:>8}")
    readings = [("the closed loop", inventory.get("at_closed_loop_stock"))]
    readings += [
        (f"shelfcast at service level {row['service_level']}", row.get("at_shelfcast_stock"))
        for row in inventory.get("tradeoff", [])
    ]
    for label, at in readings:
        if at:  # summaries from before these readings lack them
            print(
                f"at the stock of {label} ({at['mean_on_hand_days']:.1f} days): min_max "
                f"{_share(at['min_max_fill_rate'])}, seasonal_naive "
                f"{_share(at['seasonal_naive_fill_rate'])}"
            )
    names = [name for name, _ in rows]
    print(f"{'fill rate, stock days':<24}" + "".join(f"{n:>18}" for n in names))
    keys = ["closed_loop" if n == "closed loop" else n for n in names]
    for cls, row in inventory.get("by_demand_class", {}).items():
        cells = "".join(
            f"{row[k]['fill_rate']:>10.1%}{row[k]['mean_on_hand_days']:>8.0f}" for k in keys
        )
        label = f"{cls} ({row['series']})"
        print(f"{label:<24}{cells}")


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    """Measure one worker's throughput and latency on real orders.

    On fresh embedded services: a bare aiokafka consumer reads a backlog of real orders (the
    reference), a worker processes the same backlog (throughput, bucket closes), then
    --rounds bursts, each followed by the bare consumer reading it and a Faust agent that does
    nothing reading as much input (the framework's ceiling, a second reference; the ratios
    are the rounds' medians), then orders arrive at a steady rate (produce -> effect and
    order -> alert latency). Prints JSON and writes OUT/bench.json (docs/benchmark.md). With
    --close-only, no FILE: N synthetic series resampled from the shipped sample go through the real
    bucket close (Redis, Kafka acknowledged), timed against river's HoltWinters on the same
    series in the same run; the result goes under `close` in OUT/bench.json.
    """
    from streamer.ops.bench import BenchSettings, run_bench

    if args.close_only:
        from streamer.ops.bench_close import CloseBench, run_close_bench

        partitions = settings.kafka.partitions
        workers = args.workers or min(BACKTEST_WORKERS, partitions)
        bench_close = CloseBench(args.series, partitions, closes=args.closes, workers=workers)
        out = run_close_bench(args.out, settings, bench_close, progress=not args.no_progress)
        print(json.dumps(out["close"], indent=2))
        return 0
    if args.file is None or not args.file.is_file():
        raise FileNotFoundError(
            f"{args.file or 'FILE'} not found: pass an Online Retail CSV (`shelfcast data "
            "fetch` downloads the full year), or use --close-only"
        )
    bench = BenchSettings(args.lines, args.rate, args.seconds, args.burst, args.rounds)
    result = run_bench(args.file, args.out, settings, bench, progress=not args.no_progress)
    print(json.dumps(result, indent=2))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write PNG charts and an HTML page from a backtest's output folder.

    Chart a backtest's output: forecast against actual demand for the top SKUs, weekly error
    against the seasonal naive, and alerts against the simulated stock, on one HTML page
    with the key numbers of summary.json (docs/report.md). Demand and stock are recomputed
    from the backtest's input file, which must still exist.
    """
    from streamer.ops.report import write_report

    if not (args.dir / "summary.json").is_file():
        print(
            f"shelfcast report: {args.dir} has no summary.json. Point it at the --out folder "
            "of `shelfcast backtest FILE --out DIR` or `shelfcast demo`, or run one first.",
            file=sys.stderr,
        )
        return 2
    print(f"report: {write_report(args.dir, args.out, args.top)}")
    return 0


def explain(out: Path) -> None:
    """A few readable lines: top SKUs, their next-7-day forecast, alerts raised."""
    _explain_forecasts(out / "forecasts.jsonl")
    _explain_alerts(out / "alerts.jsonl")


def _explain_forecasts(path: Path) -> None:
    """The top location series by forecast volume, each with its latest forecast and its SKU's
    rollup."""
    latest: dict[str, dict] = {}
    volume: dict[str, float] = defaultdict(float)
    with path.open() as f:
        for line in f:
            fc = json.loads(line)
            key = series_key(fc["sku"], fc["location"])
            volume[key] += fc["horizon"][0]["mean"]
            if key not in latest or fc["issued_at"] > latest[key]["issued_at"]:
                latest[key] = fc
    print("\ntop series by forecast volume, next 7 days from the last closed day:")
    locations = [k for k in volume if not is_rollup(k)]
    for key in sorted(locations, key=volume.__getitem__, reverse=True)[:5]:
        fc = latest[key]
        mean, p10, p90 = (sum(h[q] for h in fc["horizon"]) for q in ("mean", "p10", "p90"))
        rollup = latest.get(series_key(fc["sku"], ALL_LOCATIONS), {"horizon": [], "locations": 0})
        print(
            f"  {fc['sku']:>7} {fc['location']:<15} from {fc['issued_at'][:10]}: "
            f"{mean:7.0f} units (p10-p90 sum {p10:.0f}-{p90:.0f}), model {fc['model']}; "
            f"{sum(h['mean'] for h in rollup['horizon']):.0f} in all "
            f"{rollup['locations']} locations"
        )


def _explain_alerts(path: Path) -> None:
    alerts = [json.loads(line) for line in path.open()]
    raised = [a for a in alerts if a["status"] == "raised"]
    print(f"\nlow-stock alerts: {len(raised)} raised, {len(alerts) - len(raised)} cleared; first:")
    for a in raised[:5]:
        cover = "n/a" if a["days_of_cover"] is None else f"{a['days_of_cover']:.1f}d"
        print(
            f"  {a['ts'][:16]} {a['sku']:>7} {a['location']:<15} {a['severity']:<8} "
            f"on hand {a['on_hand']:>5} <= reorder point {a['reorder_point']:.0f} (cover {cover})"
        )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"shelfcast: bad setting in the environment: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command != "worker":  # Faust installs its own handlers in the worker
        # run `finally` blocks on SIGTERM too, so embedded services and children stop
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if args.command == "worker":
            return cmd_worker(settings)
        if args.command == "replay":
            return cmd_replay(args, settings)
        if args.command == "backtest":
            return cmd_backtest(args, settings, args.file)
        if args.command == "trainer":
            return cmd_trainer(args, settings)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "bench":
            return cmd_bench(args, settings)
        if args.command == "status":
            return cmd_status(args, settings)
        if args.command == "data":
            return cmd_data(args, settings)
        if args.command == "offsets":
            return cmd_offsets(args, settings)
        return cmd_backtest(args, settings, SAMPLE)
    except (FileNotFoundError, ValueError, RuntimeError, TimeoutError) as exc:
        print(f"shelfcast {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
