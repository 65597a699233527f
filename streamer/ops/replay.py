"""Turn order files into events and produce them to Kafka, keyed by SKU.

Three inputs (``--format``, guessed from the file when absent):

* ``online-retail``: the UCI Online Retail CSV layout (``InvoiceNo,StockCode,...,Country``);
* ``jsonl``: JSON lines already in the ``orders`` contract, produced verbatim, so bad lines
  reach the DLQ as they are;
* ``csv``: any CSV with a header, its columns mapped to ``ts``, ``sku``, ``location`` and
  ``quantity`` (and optionally ``unit_price``, ``customer_id``, ``order_id``, ``event_id``)
  by ``--columns``, dates read by ``--date-format`` or as ISO 8601 / epoch seconds or ms.

Mapping of the Online Retail quirks (the data set's README: ``shelfcast data fetch``):
* ``event_id`` = ``{InvoiceNo}:{StockCode}:{n}``, n counting repeats of the code in the invoice,
  so ids are stable in any slice that keeps all lines of a SKU;
* cancellation lines (``C`` invoices) are returns: orders with negative quantity;
* negative lines on normal invoices with price 0 are stock adjustments ("damaged", "check"):
  ``inventory`` deltas, not demand;
* non-product codes (POST, DOT, BANK CHARGES, gift vouchers, ...) are skipped and counted.

A file that cannot be read as asked (unknown header, dates that do not parse) raises
``InputError``: one line naming the problem and the option that fixes it.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pandas as pd

from streamer.eventtime.clock import DAY_SECONDS
from streamer.topics.events import customer_of, promo_flag, series_key

__all__ = [
    "COLUMNS_HELP",
    "CSV_COLUMNS",
    "FORMATS",
    "INVENTORY_LEAD_SECONDS",
    "ONLINE_RETAIL_DATE_FORMATS",
    "OPTIONAL_ROLES",
    "PRODUCT_CODE",
    "REQUIRED_ROLES",
    "InputError",
    "InputFormat",
    "OrderLine",
    "Pacer",
    "Produced",
    "ReadStats",
    "guess_format",
    "order_line",
    "parse_columns",
    "produce",
    "produce_time",
    "read_csv_mapped",
    "read_events",
    "read_jsonl",
    "read_online_retail",
    "replay_producer",
]

PRODUCT_CODE = re.compile(r"^\d{5}")
CSV_COLUMNS = {"InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice", "Country"}
FORMATS = ("online-retail", "jsonl", "csv")
REQUIRED_ROLES = ("ts", "sku", "location", "quantity")
OPTIONAL_ROLES = ("unit_price", "customer_id", "order_id", "event_id")
# How the data set's own files write InvoiceDate: this project's CSV, and UCI's spreadsheet as
# exported to CSV by common tools (US month/day).
ONLINE_RETAIL_DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%m/%d/%Y %H:%M")
COLUMNS_HELP = (
    "--columns ts=COL,sku=COL,location=COL,quantity=COL"
    "[,unit_price=COL,customer_id=COL,order_id=COL,event_id=COL]"
)


class InputError(ValueError):
    """The file cannot be read as asked; the message names the problem and the fix."""


if TYPE_CHECKING:
    from confluent_kafka import Producer


@dataclass(frozen=True, slots=True)
class Produced:
    """One message to produce: topic role ("orders"/"inventory"), key, value, event time."""

    role: str
    key: str | None
    value: bytes
    ts: float


@dataclass(frozen=True, slots=True)
class OrderLine:
    series: str
    quantity: int
    unit_price: float
    event_id: str
    customer_id: str | None = None
    promo: bool = False


def order_line(ev: Produced) -> OrderLine | None:
    """What an ``orders`` message says, as the tools that replay orders read it; None for a
    message the worker dead-letters for its shape (not JSON, a field missing, a quantity that
    is not an integer).

    >>> value = b'{"event_id":"o1","sku":"A1","location":"UK","quantity":3,"customer_id":"c9"}'
    >>> line = order_line(Produced("orders", "A1", value, 0.0))
    >>> line.series, line.quantity, line.unit_price, line.customer_id, line.promo
    ('A1@UK', 3, 0.0, 'c9', False)
    >>> order_line(Produced("orders", "A1", value[:-1] + b',"unit_price":NaN}', 0.0)) is None
    True
    """
    try:
        # the worker's parser: NaN, and integers past 64 bits (read as floats), are refused
        obj = orjson.loads(ev.value)
        series, qty = series_key(obj["sku"], obj["location"]), obj["quantity"]
        price, event_id = float(obj.get("unit_price") or 0.0), str(obj["event_id"])
        customer = customer_of(obj.get("customer_id"))
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(qty, int):
        return None
    return OrderLine(series, qty, price, event_id, customer, promo_flag(obj.get("promo")))


@dataclass
class ReadStats:
    """What reading an order file found: its lines, the events made of them (orders, returns,
    adjustments), and what was skipped and why."""

    lines: int = 0
    orders: int = 0
    returns: int = 0
    adjustments: int = 0
    skipped_non_product: int = 0
    # lines not turned into events, by reason (non-product codes included)
    skipped: dict[str, int] = field(default_factory=dict)
    # how the file was read, so a later reader (``shelfcast report``) reads it the same way
    format: str = ""
    columns: dict[str, str] = field(default_factory=dict)
    date_format: str | None = None


@dataclass(frozen=True)
class InputFormat:
    """How to read an input file: ``format`` None guesses it; ``columns`` maps CSV roles."""

    format: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    date_format: str | None = None


def parse_columns(text: str) -> dict[str, str]:
    """``ts=Date,sku=Item`` -> ``{"ts": "Date", "sku": "Item"}``.

    >>> parse_columns("ts=Order Date, sku=Item,location=Store,quantity=Qty")
    {'ts': 'Order Date', 'sku': 'Item', 'location': 'Store', 'quantity': 'Qty'}
    """
    roles = (*REQUIRED_ROLES, *OPTIONAL_ROLES)
    columns: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        role, sep, column = part.partition("=")
        role = role.strip()
        if not sep or not column.strip():
            raise InputError(f"--columns: {part!r} is not ROLE=COLUMN; e.g. {COLUMNS_HELP}")
        if role not in roles:
            raise InputError(f"--columns: unknown role {role!r}; roles are {', '.join(roles)}")
        columns[role] = column.strip()
    return columns


def _open_text(path: Path) -> Iterator[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig") as f:
        yield from f


def _first_line(path: Path) -> str:
    try:
        return next((line for line in _open_text(path) if line.strip()), "")
    except (UnicodeDecodeError, OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot read it as UTF-8 text ({exc})") from exc


def _delimiter(header: str) -> str:
    return max(",;\t|", key=header.count)


def _header(path: Path) -> list[str]:
    first = _first_line(path)
    return [c.strip() for c in next(csv.reader([first], delimiter=_delimiter(first)), [])]


def guess_format(path: Path) -> str:
    """``online-retail``, ``jsonl`` or ``csv``, from the file's first line."""
    first = _first_line(path).lstrip()
    if first.startswith("{"):
        return "jsonl"
    if CSV_COLUMNS.issubset(_header(path)):
        return "online-retail"
    if any(d in first for d in ",;\t|"):
        return "csv"
    raise InputError(
        f"{path}: cannot tell its format from its first line {first.strip()[:60]!r}; "
        f"pass --format {'|'.join(FORMATS)}"
    )


def _bad_dates(
    path: Path, raw: pd.Series, parsed: pd.Series, column: str, line0: int, fmt: str | None
) -> None:
    bad = parsed.isna() & (raw.str.strip() != "")
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        what = f"does not match --date-format {fmt!r}" if fmt else "is not a date this reader knows"
        raise InputError(
            f"{path} line {i + line0}: {column} {raw.iloc[i]!r} {what} ({int(bad.sum())} such "
            f"lines); pass the format its dates are written in, e.g. --date-format "
            "'%d/%m/%Y %H:%M' (Python strptime codes)"
        )


def _to_epoch(ts: pd.Series) -> pd.Series:
    if getattr(ts.dt, "tz", None) is not None:
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    return (ts - pd.Timestamp("1970-01-01")).dt.total_seconds()  # any datetime resolution


def _online_retail_dates(path: Path, raw: pd.Series, date_format: str | None) -> pd.Series:
    for fmt in (date_format,) if date_format else ONLINE_RETAIL_DATE_FORMATS:
        ts = pd.to_datetime(raw, format=fmt, errors="coerce")
        if not (ts.isna() & (raw.str.strip() != "")).any():
            return ts
    _bad_dates(path, raw, ts, "InvoiceDate", 2, date_format)
    return ts


def read_online_retail(
    path: Path, limit: int | None = None, date_format: str | None = None
) -> tuple[list[Produced], ReadStats]:
    """Events from the Online Retail CSV, in file order."""
    df = pd.read_csv(
        path,
        dtype={"InvoiceNo": str, "StockCode": str, "CustomerID": str, "Country": str},
        keep_default_na=False,
        nrows=limit,
    )
    missing = CSV_COLUMNS - set(df.columns)
    if missing:
        raise InputError(
            f"{path}: not the Online Retail layout, missing columns {sorted(missing)}; for "
            f"another layout pass --format csv {COLUMNS_HELP}"
        )
    stats = ReadStats(lines=len(df), format="online-retail", date_format=date_format)
    df["StockCode"] = df["StockCode"].str.strip()
    df["n"] = df.groupby(["InvoiceNo", "StockCode"]).cumcount()
    ts = _online_retail_dates(path, df["InvoiceDate"].astype(str), date_format)
    df["ts"] = _to_epoch(ts)
    df["iso"] = ts.dt.strftime("%Y-%m-%dT%H:%M:%S")
    out: list[Produced] = []
    for row in df.itertuples(index=False):
        if not PRODUCT_CODE.match(row.StockCode):
            stats.skipped_non_product += 1
            continue
        event_id = f"{row.InvoiceNo}:{row.StockCode}:{row.n}"
        key = row.StockCode  # the partition key: all locations of a SKU together
        quantity = int(row.Quantity)
        if quantity < 0 and not row.InvoiceNo.startswith("C") and float(row.UnitPrice) == 0.0:
            stats.adjustments += 1
            msg: dict[str, object] = {
                "event_id": event_id, "ts": row.iso, "sku": row.StockCode,
                "location": row.Country, "delta": quantity,
            }  # fmt: skip
            out.append(Produced("inventory", key, _dumps(msg), row.ts))
            continue
        if quantity < 0:
            stats.returns += 1
        else:
            stats.orders += 1
        msg = {
            "event_id": event_id, "ts": row.iso, "sku": row.StockCode, "location": row.Country,
            "quantity": quantity, "unit_price": float(row.UnitPrice), "order_id": row.InvoiceNo,
        }  # fmt: skip
        if row.CustomerID.strip():  # a quarter of the lines have none
            msg["customer_id"] = row.CustomerID.strip()
        out.append(Produced("orders", key, _dumps(msg), row.ts))
    if stats.skipped_non_product:
        stats.skipped["non-product code"] = stats.skipped_non_product
    return out, stats


def _csv_dates(path: Path, raw: pd.Series, column: str, date_format: str | None) -> pd.Series:
    """Event times as UTC datetimes: ``date_format``, else epoch s/ms, else ISO 8601."""
    text = raw.str.strip()
    if date_format:
        ts = pd.to_datetime(text, format=date_format, errors="coerce")
    elif len(text) and text.str.fullmatch(r"\d+(\.\d+)?").all():
        numbers = text.astype(float)
        unit = "ms" if numbers.max() > 1e11 else "s"  # 1e11 s is the year 5138
        ts = pd.to_datetime(numbers, unit=unit, errors="coerce")
    else:
        ts = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
    _bad_dates(path, raw, ts, column, 2, date_format)
    return ts


def _column_mapping(path: Path, columns: dict[str, str]) -> dict[str, str]:
    """Each role's column: as ``columns`` maps it, else the header's column named after it."""
    header = _header(path)
    by_lower = {h.lower(): h for h in header}
    mapping = dict(columns)
    for role in (*REQUIRED_ROLES, *OPTIONAL_ROLES):
        if role not in mapping and role in by_lower:
            mapping[role] = by_lower[role]
    missing = [r for r in REQUIRED_ROLES if r not in mapping]
    unknown = [f"{r}={c}" for r, c in mapping.items() if c not in header]
    if missing or unknown:
        what = (
            f"no column for {', '.join(missing)}" if missing else f"no column {', '.join(unknown)}"
        )
        raise InputError(
            f"{path}: header {','.join(header)[:120]!r} has {what}; map them with {COLUMNS_HELP}"
        )
    return mapping


def _skip_reason(sku: str, location: str, t: float, q: float, p: float | None) -> str | None:
    """Why a mapped line cannot be an order (``p`` is None when no price is mapped), or None."""
    if not sku or not location:
        return f"empty {'sku' if not sku else 'location'}"
    if pd.isna(t):
        return "empty ts"
    if not math.isfinite(q) or q != int(q):
        return "quantity not a whole number"
    if q == 0:
        return "zero quantity"
    if p is not None and pd.isna(p):
        return "unit_price not a number"
    return None


def _mapped_order(
    event_id: str,
    stamp: str,
    sku: str,
    location: str,
    q: float,
    p: float | None,
    order_id: str,
    customer: str,
) -> dict[str, object]:
    """The ``orders`` message of a valid line; optional fields only where the line has them."""
    msg: dict[str, object] = {
        "event_id": event_id,
        "ts": stamp,
        "sku": sku,
        "location": location,
        "quantity": int(q),
    }
    if p is not None:
        msg["unit_price"] = float(p)
    if order_id:
        msg["order_id"] = order_id
    if customer:
        msg["customer_id"] = customer
    return msg


def read_csv_mapped(
    path: Path,
    columns: dict[str, str],
    limit: int | None = None,
    date_format: str | None = None,
) -> tuple[list[Produced], ReadStats]:
    """Orders from a CSV with a header, its columns mapped to roles (default: by role name).

    ``event_id`` is the mapped column or ``{file name}:{line}``, so replaying the same file
    twice applies each line once. Lines that cannot be an order are counted by reason.
    """
    mapping = _column_mapping(path, columns)
    df = pd.read_csv(
        path,
        sep=_delimiter(_first_line(path)),
        dtype=str,
        keep_default_na=False,
        nrows=limit,
        skipinitialspace=True,
        encoding="utf-8-sig",
    )
    df.columns = [str(c).strip() for c in df.columns]
    stats = ReadStats(lines=len(df), format="csv", columns=dict(columns), date_format=date_format)
    skipped: Counter[str] = Counter()
    ts = _csv_dates(path, df[mapping["ts"]], mapping["ts"], date_format)
    epoch = _to_epoch(ts)
    iso = (ts.dt.tz_convert("UTC") if ts.dt.tz is not None else ts).dt.strftime("%Y-%m-%dT%H:%M:%S")
    quantity = pd.to_numeric(df[mapping["quantity"]].str.strip(), errors="coerce")
    n = len(df)
    prices = (
        pd.to_numeric(df[mapping["unit_price"]].str.strip(), errors="coerce").tolist()
        if "unit_price" in mapping
        else [None] * n
    )
    out: list[Produced] = []

    def column(role: str) -> list[str]:
        return df[mapping[role]].str.strip().tolist() if role in mapping else [""] * n

    rows = zip(
        column("sku"), column("location"), epoch.tolist(), iso.tolist(), quantity.tolist(),
        prices, column("event_id"), column("order_id"), column("customer_id"), strict=True,
    )  # fmt: skip
    for i, (sku, location, t, stamp, q, p, event_id, order_id, customer) in enumerate(rows):
        reason = _skip_reason(sku, location, t, q, p)
        if reason is not None:
            skipped[reason] += 1
            continue
        line_id = event_id or f"{path.name}:{i + 2}"  # line i + 2: after the header
        msg = _mapped_order(line_id, stamp, sku, location, q, p, order_id, customer)
        if q < 0:
            stats.returns += 1
        else:
            stats.orders += 1
        out.append(Produced("orders", sku, _dumps(msg), float(t)))
    stats.skipped = dict(skipped)
    return out, stats


def read_jsonl(path: Path, limit: int | None = None) -> tuple[list[Produced], ReadStats]:
    """Lines in the ``orders`` contract; unparseable lines are kept so the worker rejects them."""
    stats = ReadStats(format="jsonl")
    out: list[Produced] = []
    for line in _open_text(path):
        if limit is not None and stats.lines >= limit:
            break
        line = line.rstrip("\n")
        if not line.strip():
            continue
        stats.lines += 1
        key, ts = None, 0.0
        try:
            obj = json.loads(line)
            if isinstance(obj, dict) and isinstance(obj.get("sku"), str):
                key = obj["sku"]
        except ValueError:
            pass
        stats.orders += 1
        out.append(Produced("orders", key, line.encode(), ts))
    return out, stats


def read_events(
    path: Path, limit: int | None = None, how: InputFormat | None = None
) -> tuple[list[Produced], ReadStats]:
    """Events from ``path`` read as ``how`` says (default: format guessed, columns by name)."""
    how = how or InputFormat()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    fmt = how.format or guess_format(path)
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; pass --format {'|'.join(FORMATS)}")
    if how.columns and fmt != "csv":
        raise InputError(f"--columns applies to --format csv, not {fmt}; add --format csv")
    if fmt == "jsonl":
        return read_jsonl(path, limit)
    if fmt == "online-retail":
        return read_online_retail(path, limit, how.date_format)
    return read_csv_mapped(path, how.columns, limit, how.date_format)


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class Pacer:
    """Sleeps so that production follows ``rate`` events/s or event time sped up ``speedup``x."""

    def __init__(self, rate: float | None, speedup: float | None) -> None:
        self.rate, self.speedup = rate, speedup
        self.start = time.monotonic()
        self.first_ts: float | None = None
        self.n = 0

    def wait(self, event_ts: float) -> None:
        self.n += 1
        if self.rate:
            target = self.n / self.rate
        elif self.speedup and event_ts:
            if self.first_ts is None:
                self.first_ts = event_ts
            target = (event_ts - self.first_ts) / self.speedup
        else:
            return
        delay = target - (time.monotonic() - self.start)
        if delay > 0:
            time.sleep(delay)


# A replay puts inventory on its topic this much event time ahead of the orders around it. The
# two topics are read side by side, not in step: an inventory event read after orders stamped
# later than it would take effect late, by however far the consumer happened to read ahead,
# and two replays would differ. Read early, stock still moves at the event's own time (a delta
# waits for the orders to reach it, docs/alerts.md), so a replay is the same every time.
INVENTORY_LEAD_SECONDS = float(DAY_SECONDS)


def produce_time(ev: Produced) -> float:
    """Where ``ev`` goes in a replay's produce order."""
    return ev.ts - INVENTORY_LEAD_SECONDS if ev.role == "inventory" else ev.ts


def replay_producer(bootstrap: str, client_config: dict[str, str]) -> Producer:
    from confluent_kafka import Producer

    return Producer(
        {
            "bootstrap.servers": bootstrap,
            # the same partitioner as Faust/aiokafka, so keys land where the worker expects
            "partitioner": "murmur2_random",
            "linger.ms": 20,
            "batch.num.messages": 10_000,
            "enable.idempotence": True,
            "message.timeout.ms": 60_000,
            **client_config,
        }
    )


def _produce_one(
    producer: Producer,
    topic: str,
    ev: Produced,
    on_delivery: Callable[[object, object], None],
    bootstrap: str,
) -> None:
    """Queue ``ev``, waiting for room while the producer's buffer is full."""
    from confluent_kafka import KafkaException

    while True:
        try:
            producer.produce(
                topic,
                value=ev.value,
                key=None if ev.key is None else ev.key.encode(),
                on_delivery=on_delivery,
            )
            return
        except BufferError:
            producer.poll(0.1)
        except KafkaException as exc:
            raise RuntimeError(f"cannot produce to {bootstrap}: {exc}") from exc


def produce(
    bootstrap: str,
    client_config: dict[str, str],
    topics: dict[str, str],
    events: Iterable[Produced],
    rate: float | None = None,
    speedup: float | None = None,
    progress: bool = True,
    total: int | None = None,
    hold: Callable[[int], None] | None = None,
    producer: Producer | None = None,
) -> int:
    """Produce every event, keyed by SKU, and wait for delivery. Returns the count.

    ``hold(n)``, called every 1,000 events with the number produced so far, may block to keep
    the producer from running too far ahead of its consumer. ``producer`` (``replay_producer``)
    saves connecting again when a caller produces many small batches.
    """
    from tqdm import tqdm

    errors: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    producer = producer or replay_producer(bootstrap, client_config)
    pacer = Pacer(rate, speedup)
    n = 0
    with tqdm(total=total, unit="ev", desc="replay", disable=not progress, mininterval=0.5) as bar:
        for ev in events:
            pacer.wait(ev.ts)
            _produce_one(producer, topics[ev.role], ev, on_delivery, bootstrap)
            producer.poll(0)
            n += 1
            bar.update()
            if hold is not None and n % 1000 == 0:
                producer.flush(60)
                hold(n)
        remaining = producer.flush(60)
    if remaining or errors:
        raise RuntimeError(
            f"{remaining} messages undelivered, {len(errors)} delivery errors "
            f"(first: {errors[0] if errors else 'timeout'}); is Kafka at {bootstrap} reachable?"
        )
    return n
