"""The LSTM trainer: a process of its own that refreshes the global LSTM from Redis.

Each refresh reads every partition's active series from the feature store (their bounded
demand and revenue histories and the partitions' closed flags, docs/redis-layout.md), builds
a ``Panel`` and runs ``models.lstm.trainer.refresh``: train a candidate, validate it against the
champion and the seasonal naive, save it as the next checkpoint version and promote it only
if it wins. Workers pick up a new champion from the registry directory; training never runs in
a worker, so a worker's event loop never waits for it (docs/lstm.md, "Trainer process").

Every refresh leaves three records: the hash ``shelfcast:trainer`` (the latest outcome, for
people and dashboards), a line of ``refreshes.jsonl`` in the registry directory (the history
of versions) and the ``shelfcast_lstm_*`` metrics.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import time
from typing import Any

import orjson
import redis
import torch
from prometheus_client import start_http_server

from models.lstm.kinds import Architecture
from models.lstm.network import ACTIVE_BUCKETS, LSTMConfig, Panel, choose_device
from models.lstm.registry import CheckpointError, Registry
from models.lstm.trainer import RefreshReport, refresh
from streamer import metrics
from streamer.config.rules import ALL_WINDOWS
from streamer.config.security import redact
from streamer.config.settings import Settings
from streamer.features.connect import connect
from streamer.features.keys import PREFIX, part_key, part_series_key, series_key
from streamer.features.store import as_text

__all__ = [
    "HISTORY_FILE",
    "SERIES_PER_PIPELINE",
    "STATUS",
    "STATUS_FIELDS",
    "buckets_needed",
    "last_closed",
    "lstm_config",
    "panel_through",
    "read_panel",
    "run_once",
    "run_trainer",
    "train_once",
]

log = logging.getLogger(__name__)

STATUS = f"{PREFIX}:trainer"
HISTORY_FILE = "refreshes.jsonl"
STATUS_FIELDS = (
    "at", "outcome", "through", "version", "champion", "promoted", "reason", "series",
    "train_seconds", "total_seconds", "device",
)  # fmt: skip
# 2,000 HGETALLs per round trip: large enough that 20,000 series take 10 round trips, small
# enough that one reply stays a few MB
SERIES_PER_PIPELINE = 1_000


# windows a training step on a GPU unless SHELFCAST_LSTM_BATCH_SIZE says: the CPU's 256 leave
# an H200 launch-bound (1.3x 2 CPU cores); 1024 train 3.3-3.8x faster than 256 there at the
# same validation error (docs/lstm.md, "On a GPU")
GPU_BATCH_SIZE = 1024


def lstm_config(settings: Settings, device: torch.device | None = None) -> LSTMConfig:
    """``LSTMConfig`` with the settings' overrides (``SHELFCAST_LSTM_SEQ_LEN``, ``_HIDDEN``,
    ``_EPOCHS``, ``_WARM_EPOCHS``, ``_WINDOWS_PER_EPOCH``, ``all``: every eligible window
    each epoch; ``_SIGNALS``, ``_BFLOAT16``, ``_BATCH_SIZE``, ``_LR``); every other field
    keeps its default, but the batch on a CUDA ``device`` (``GPU_BATCH_SIZE``).

    >>> lstm_config(Settings.of(lstm_hidden=8, lstm_windows_per_epoch=ALL_WINDOWS)).hidden
    8
    >>> cuda = torch.device("cuda")
    >>> lstm_config(Settings.of(), cuda).batch_size, lstm_config(Settings.of()).batch_size
    (1024, 256)
    >>> lstm_config(Settings.from_env({"SHELFCAST_LSTM_BATCH_SIZE": "4096"}), cuda).batch_size
    4096
    """
    overrides = {
        "seq_len": settings.trainer.lstm_seq_len,
        "hidden": settings.trainer.lstm_hidden,
        "epochs": settings.trainer.lstm_epochs,
        "warm_epochs": settings.trainer.lstm_warm_epochs,
        "windows_per_epoch": settings.trainer.lstm_windows_per_epoch,
        "signals": settings.trainer.lstm_signals,
        "bfloat16": settings.trainer.lstm_bfloat16,
        "batch_size": settings.trainer.lstm_batch_size,
        "lr": settings.trainer.lstm_lr,
    }
    if device is not None and device.type == "cuda" and overrides["batch_size"] is None:
        overrides["batch_size"] = GPU_BATCH_SIZE
    changes: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    if changes.get("windows_per_epoch") == ALL_WINDOWS:
        changes["windows_per_epoch"] = None
    return LSTMConfig(**changes)


def buckets_needed(cfg: LSTMConfig) -> int:
    """Buckets a panel needs for a refresh: the first validation window ends ``validation`` +
    ``horizon`` buckets before the panel's end, and needs ``seq_len`` input buckets and the
    worker's activity window (``ACTIVE_BUCKETS``, which decides what is scored) behind it.

    >>> buckets_needed(LSTMConfig())
    90
    """
    return cfg.validation + cfg.horizon + max(cfg.seq_len, ACTIVE_BUCKETS) - 1


def _client(settings: Settings) -> redis.Redis:
    return connect(settings, decode_responses=True, socket_connect_timeout=10)


def _clocks(client: redis.Redis, settings: Settings) -> list[int]:
    """The last closed bucket of every partition that has closed one."""
    pipe = client.pipeline(transaction=False)
    for p in range(settings.kafka.partitions):
        pipe.hget(part_key(p, "clock"), "closed")
    return [int(v) for v in pipe.execute() if v is not None]


def last_closed(client: redis.Redis, settings: Settings) -> int | None:
    """The latest bucket that every partition with a clock has closed (later ones may still be
    taking orders somewhere); None before the first close."""
    return min(_clocks(client, settings), default=None)


def read_panel(client: redis.Redis, settings: Settings, through: int | None = None) -> Panel | None:
    """Every active series of every partition over the buckets up to ``through`` (default:
    ``last_closed``), as a ``Panel`` ending at ``through``; None when nothing sold in them.

    The oldest bucket a worker may be trimming meanwhile (closing the bucket after its clock)
    is left out, so that no series reads it while others do not.

    A bucket is closed for the panel when every partition that flagged it flagged it closed:
    the panel's closed flag is shared by all series and means the shop did not trade
    (``streamer.ops.backtest.truth_from``'s rule), while a partition flags a bucket closed when
    *its* series had no order. With few series per partition a quiet partition is common on
    open days: the demo sample's 25 SKUs spread over 8 partitions leave 159 of its 182 days
    flagged closed by some partition, 41 by all.
    """
    clocks = _clocks(client, settings)
    if through is None:
        if not clocks:
            return None
        through = min(clocks)
    first = max(through, *clocks) - settings.models.history_buckets + 2
    partition_of, closed = _series_and_closed(client, settings, first, through)
    keep_signals = lstm_config(settings).signals
    demand, revenue, signals = _series_history(client, partition_of, first, through, keep_signals)
    if not demand:
        return None
    # each series is known through `through`, so the panel ends there even when nothing sold
    for s in {s for s, _ in demand}:
        demand.setdefault((s, through), 0.0)
    weekday = settings.time.calendar().weekday
    return Panel.from_buckets(demand, revenue, closed, weekday, signals if keep_signals else None)


def _series_and_closed(
    client: redis.Redis, settings: Settings, first: int, through: int
) -> tuple[dict[str, int], set[int]]:
    """Every active series with its partition, and the buckets from ``first`` to ``through``
    that every partition which flagged them flagged closed."""
    buckets = [str(b) for b in range(first, through + 1)]
    pipe = client.pipeline(transaction=False)
    for p in range(settings.kafka.partitions):
        pipe.zrange(part_series_key(p), 0, -1)
        pipe.hmget(part_key(p, "closed"), buckets)
    raw = pipe.execute()
    partition_of = {as_text(s): p for p, names in enumerate(raw[::2]) for s in names}
    flags = [[as_text(f) for f in column] for column in zip(*raw[1::2], strict=True)]
    closed = {first + i for i, column in enumerate(flags) if set(column) - {""} == {"1"}}
    return partition_of, closed


Buckets = dict[tuple[str, int], float]


def _series_history(
    client: redis.Redis,
    partition_of: dict[str, int],
    first: int,
    through: int,
    with_signals: bool,
) -> tuple[Buckets, Buckets, dict[tuple[str, int], list[float]]]:
    """Demand, revenue and (``with_signals``: the models read them) the customer and
    promotion signals of each series per bucket from ``first`` to ``through``, read
    ``SERIES_PER_PIPELINE`` series per round trip."""
    series = sorted(partition_of)
    demand: Buckets = {}
    revenue: Buckets = {}
    signals: dict[tuple[str, int], list[float]] = {}
    into = [demand, revenue, signals][: 3 if with_signals else 2]
    names = ("demand", "revenue", "signals")[: len(into)]
    for i in range(0, len(series), SERIES_PER_PIPELINE):
        chunk = series[i : i + SERIES_PER_PIPELINE]
        pipe = client.pipeline(transaction=False)
        for s in chunk:
            for name in names:
                pipe.hgetall(series_key(s, partition_of[s], name))
        raw = iter(pipe.execute())
        for s in chunk:
            for kept in into:
                for b, v in next(raw).items():
                    if first <= (bucket := int(b)) <= through:
                        kept[(s, bucket)] = orjson.loads(v) if kept is signals else float(v)
    return demand, revenue, signals


def panel_through(settings: Settings, through: int) -> Panel | None:
    """``read_panel`` through ``through`` on a connection of its own: the data of a refresh
    that trains later (the backtest reads it before the workers move on and trim it)."""
    with _client(settings) as client:
        return read_panel(client, settings, through)


def train_once(
    settings: Settings,
    through: int | None = None,
    cfg: LSTMConfig | None = None,
    device: str | None = None,
) -> RefreshReport | None:
    """One refresh from the Redis at ``settings.redis.url`` into the registry at
    ``settings.models_path()``, on the data up to ``through`` (default: ``last_closed``), with
    ``cfg`` (default: ``lstm_config``) on ``device`` (default: cuda when available). None when
    it was skipped for lack of data. The outcome is recorded either way (module docstring); an
    error is recorded as ``failed`` and raised."""
    return run_once(settings, through, cfg, device)[1]


def run_once(
    settings: Settings,
    through: int | None = None,
    cfg: LSTMConfig | None = None,
    device: str | None = None,
    panel: Panel | None = None,
    promote: bool = True,
) -> tuple[dict[str, Any], RefreshReport | None]:
    """``train_once``, also returning the record it wrote (its line of refreshes.jsonl).
    ``panel``: the data through ``through``, read before (``read_panel``) instead of now;
    ``promote`` False leaves a winning candidate for the caller to promote
    (``models.lstm.trainer.refresh``)."""
    started = time.perf_counter()
    target = choose_device(device)
    cfg = cfg or lstm_config(settings, target)
    torch.set_num_threads(settings.models.torch_threads)
    registry = Registry(settings.models_path())
    record: dict[str, Any] = {
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "outcome": "skipped",
        "reason": "",
        "through": through,
        "first_bucket": None,
        "series": 0,
        "version": None,
        "champion": None,
        "promoted": False,
        "device": str(target),
        "read_seconds": None,
        "train_seconds": None,
        "total_seconds": None,
        "validation_buckets": None,
        "config": cfg.to_dict(),
        "report": None,
    }
    client: redis.Redis | None = None  # a cluster client connects, and can fail, at once
    try:
        try:
            client = _client(settings)
            report = _read_and_refresh(
                client, settings, registry, record, cfg=cfg, device=target, promote=promote,
                panel=panel,
            )  # fmt: skip
        except Exception as exc:
            record.update(outcome="failed", reason=f"{type(exc).__name__}: {exc}")
            _record(client, registry, record, None, started)
            raise
        _record(client, registry, record, report, started)
    finally:
        if client is not None:
            client.close()
    return record, report


def _read_and_refresh(
    client: redis.Redis,
    settings: Settings,
    registry: Registry,
    record: dict[str, Any],
    *,
    cfg: LSTMConfig,
    device: torch.device,
    promote: bool,
    panel: Panel | None,
) -> RefreshReport | None:
    """Read (unless ``panel`` was read before), check there is enough data, refresh; fills
    ``record`` with what it learns."""
    t0 = time.perf_counter()
    through = record["through"]
    if through is None and (through := last_closed(client, settings)) is None:
        record["reason"] = "no bucket closed yet: start the workers and replay or stream orders"
        return None
    record["through"] = through
    if panel is None:
        panel = read_panel(client, settings, through)
    record["read_seconds"] = round(time.perf_counter() - t0, 3)
    if panel is None:
        record["reason"] = (
            f"no sale in the {settings.models.history_buckets - 1} buckets through {through} "
            f"of {settings.kafka.partitions} partitions (SHELFCAST_PARTITIONS)"
        )
        return None
    width = panel.last_bucket - panel.first_bucket + 1
    record.update(first_bucket=panel.first_bucket, series=len(panel.series))
    if width < (needed := buckets_needed(cfg)):
        record["reason"] = (
            f"{width} buckets of history ({panel.first_bucket}..{through}), a refresh needs "
            f"{needed}: validation {cfg.validation} + horizon {cfg.horizon} + "
            f"max(seq_len {cfg.seq_len}, activity window {ACTIVE_BUCKETS}) - 1; "
            f"Redis keeps {settings.models.history_buckets - 1} (SHELFCAST_HISTORY_BUCKETS - 1)"
        )
        return None
    tournament = [Architecture(a) for a in settings.trainer.tournament]
    report = refresh(panel, registry, cfg, device, promote=promote, architectures=tournament)
    record.update(
        outcome="promoted" if report.promoted else "rejected",
        reason=report.reason,
        version=report.version,
        promoted=report.promoted,
        device=report.train.device,
        train_seconds=round(report.train.seconds, 3),
        validation_buckets=[through - cfg.validation + 1, through],
        report=report.to_dict(),
    )
    return report


def _record(
    client: redis.Redis | None,
    registry: Registry,
    record: dict[str, Any],
    report: RefreshReport | None,
    started: float,
) -> None:
    """Write the outcome to refreshes.jsonl, ``shelfcast:trainer``, the metrics and the log."""
    with contextlib.suppress(CheckpointError):  # its error is the refresh's reason already
        record["champion"] = registry.champion()
    record["total_seconds"] = round(time.perf_counter() - started, 3)
    with (registry.root / HISTORY_FILE).open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    status = {k: _field(record[k]) for k in STATUS_FIELDS}
    try:
        if client is None:
            raise redis.ConnectionError("no connection")
        client.hset(STATUS, mapping=status)
    except redis.RedisError as exc:
        log.warning("could not record the outcome in Redis (%s): %s", STATUS, exc)

    metrics.LSTM_REFRESHES.labels(record["outcome"]).inc()
    metrics.LSTM_CHAMPION_VERSION.set(record["champion"] or 0)
    if report is not None:
        metrics.LSTM_TRAINING_SECONDS.observe(report.train.seconds)
        champion = report.champion.mae if report.champion else math.nan
        for model, mae in (
            ("candidate", report.candidate.mae),
            ("champion", champion),
            ("seasonal_naive", report.candidate.naive_mae),
            *((f"entrant_{e.arch}", e.validation.mae) for e in report.entrants),
        ):
            metrics.LSTM_VALIDATION_MAE.labels(model).set(mae)
        log.info(
            "LSTM refresh %s v%d (%d series, buckets %d..%d): %s; train %.1fs, total %.1fs on %s",
            record["outcome"], report.version, record["series"], record["first_bucket"],
            record["through"], report.reason, report.train.seconds, record["total_seconds"],
            record["device"],
        )  # fmt: skip
    elif record["outcome"] == "failed":
        log.error("LSTM refresh failed: %s", record["reason"])
    else:
        log.info("LSTM refresh skipped: %s", record["reason"])


def _field(value: object) -> str:
    """A record value as a hash field: "" for none, 0/1 for booleans."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    return str(value)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_trainer(settings: Settings, every_minutes: float, device: str | None = None) -> None:
    """Refresh now, then every ``every_minutes`` of wall time (start to start; a refresh that
    overruns its slot moves the next to the following slot), serving the ``shelfcast_lstm_*``
    metrics on ``settings.web_bind``:``SHELFCAST_TRAINER_PORT`` (6067). A slot whose data
    ends at the closed bucket this process last trained through trains nothing (same data,
    same seed: the same model again); a restart trains once more, with its possibly new
    settings. A failed refresh is logged and the next slot tries again.
    Returns on SIGTERM or Ctrl-C, abandoning a refresh in progress: checkpoints are written
    atomically, so it leaves at most a saved, unpromoted version."""
    cfg = lstm_config(settings, choose_device(device))
    port = settings.trainer.port
    period = every_minutes * 60
    try:
        server, _ = start_http_server(port, settings.web_bind, registry=metrics.TRAINER_REGISTRY)
    except OSError as exc:
        raise OSError(
            f"cannot serve metrics on {settings.web_bind}:{port} ({exc.strerror}): "
            "set SHELFCAST_TRAINER_PORT or SHELFCAST_WEB_BIND"
        ) from exc
    previous = signal.signal(signal.SIGTERM, _interrupt)
    log.info(
        "LSTM trainer: a refresh every %g min from Redis %s into %s; metrics on http://%s:%d/metrics",
        every_minutes, redact(settings.redis.url), settings.models_path(), settings.web_bind, port,
    )  # fmt: skip
    trained: int | None = None  # the last bucket of the data this process last trained on
    try:
        due = time.monotonic()
        while True:
            try:
                with _client(settings) as client:
                    latest = last_closed(client, settings)
            except redis.RedisError:
                latest = None  # the refresh meets the same error and records it
            if latest is not None and latest == trained:
                log.info("LSTM refresh not needed: data still ends at bucket %d", latest)
            else:
                try:
                    record, report = run_once(settings, cfg=cfg, device=device)
                    if report is not None:
                        trained = record["through"]
                except Exception:
                    # the reason is logged and recorded already; the stack is for debugging
                    log.debug("traceback of the failed refresh", exc_info=True)
            now = time.monotonic()
            due += period * max(1, math.ceil((now - due) / period))
            time.sleep(due - now)
    except KeyboardInterrupt:
        log.info("LSTM trainer stopped")
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.shutdown()
        server.server_close()
