"""Turn order files into events and produce them to Kafka, keyed by SKU.

Two inputs: the UCI Online Retail CSV layout (``InvoiceNo,StockCode,...,Country``) and JSON lines
already in the ``orders`` contract (produced verbatim, so bad lines reach the DLQ as they are).

Mapping of the Online Retail quirks (see ../shared/data/README.md):
* ``event_id`` = ``{InvoiceNo}:{StockCode}:{n}``, n counting repeats of the code in the invoice,
  so ids are stable in any slice that keeps all lines of a SKU;
* cancellation lines (``C`` invoices) are returns: orders with negative quantity;
* negative lines on normal invoices with price 0 are stock adjustments ("damaged", "check"):
  ``inventory`` deltas, not demand;
* non-product codes (POST, DOT, BANK CHARGES, gift vouchers, ...) are skipped and counted.
"""

from __future__ import annotations

import gzip
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

PRODUCT_CODE = re.compile(r"^\d{5}")
CSV_COLUMNS = {"InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice", "Country"}


@dataclass(frozen=True, slots=True)
class Produced:
    """One message to produce: topic role ("orders"/"inventory"), key, value, event time."""

    role: str
    key: str | None
    value: bytes
    ts: float


@dataclass
class ReadStats:
    lines: int = 0
    orders: int = 0
    returns: int = 0
    adjustments: int = 0
    skipped_non_product: int = 0


def _open_text(path: Path) -> Iterator[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        yield from f


def is_csv(path: Path) -> bool:
    first = next(_open_text(path), "")
    return CSV_COLUMNS.issubset({c.strip() for c in first.split(",")})


def read_online_retail(path: Path, limit: int | None = None) -> tuple[list[Produced], ReadStats]:
    """Events from the Online Retail CSV, in file order."""
    df = pd.read_csv(
        path,
        dtype={"InvoiceNo": str, "StockCode": str, "CustomerID": str, "Country": str},
        keep_default_na=False,
        nrows=limit,
    )
    missing = CSV_COLUMNS - set(df.columns)
    if missing:
        raise ValueError(f"{path}: not the Online Retail layout, missing columns {sorted(missing)}")
    stats = ReadStats(lines=len(df))
    df["StockCode"] = df["StockCode"].str.strip()
    df["n"] = df.groupby(["InvoiceNo", "StockCode"]).cumcount()
    ts = pd.to_datetime(df["InvoiceDate"], format="%Y-%m-%d %H:%M:%S", errors="coerce")
    df["ts"] = (ts - pd.Timestamp("1970-01-01")).dt.total_seconds()  # any datetime resolution
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
        out.append(Produced("orders", key, _dumps(msg), row.ts))
    return out, stats


def read_jsonl(path: Path, limit: int | None = None) -> tuple[list[Produced], ReadStats]:
    """Lines in the ``orders`` contract; unparseable lines are kept so the worker rejects them."""
    stats = ReadStats()
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


def read_events(path: Path, limit: int | None = None) -> tuple[list[Produced], ReadStats]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    return read_online_retail(path, limit) if is_csv(path) else read_jsonl(path, limit)


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
) -> int:
    """Produce every event, keyed by SKU, and wait for delivery. Returns the count.

    ``hold(n)``, called every 1,000 events with the number produced so far, may block to keep
    the producer from running too far ahead of its consumer.
    """
    from confluent_kafka import KafkaException, Producer
    from tqdm import tqdm

    errors: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    producer = Producer(
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
    pacer = Pacer(rate, speedup)
    n = 0
    with tqdm(total=total, unit="ev", desc="replay", disable=not progress, mininterval=0.5) as bar:
        for ev in events:
            pacer.wait(ev.ts)
            while True:
                try:
                    producer.produce(
                        topics[ev.role],
                        value=ev.value,
                        key=None if ev.key is None else ev.key.encode(),
                        on_delivery=on_delivery,
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
                except KafkaException as exc:
                    raise RuntimeError(f"cannot produce to {bootstrap}: {exc}") from exc
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
