"""Read shelfcast's forecasts and low-stock alerts: validated, version-checked, each once.

    python examples/consume.py [--bootstrap HOST:PORT] [--group G] [--max N] [--idle S]

A downstream consumer in one file, with confluent-kafka and jsonschema. For every message on
``forecasts`` and ``low-stock-alerts`` it

* checks ``schema_version``: a major version other than the one this consumer was written for
  is set aside, not misread (docs/topics.md, "Versions and compatibility");
* validates it against the topic's JSON Schema (``schemas/``, or the installed package's copy),
  which accepts fields added in later minor versions;
* drops redelivered copies by id (``forecast_id``, ``alert_id``): delivery is at least once and
  ids are deterministic, so a copy has the same id;

then prints one line per message and commits its offset. Brokers: ``--bootstrap``, else
``KAFKA_BOOTSTRAP_SERVERS``, else a ``shelfcast worker`` running in this folder
(``.shelfcast/embedded.json``). Stops after ``--max`` messages, after ``--idle`` seconds
without one, or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

MAJOR = 1  # the contract major version this consumer is written for
TOPICS = {"forecasts": "forecast_id", "low-stock-alerts": "alert_id"}
SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


def load_schema(topic: str, directory: Path = SCHEMAS) -> dict[str, Any]:
    """The topic's schema from ``directory``, else from an installed shelfcast."""
    path = directory / f"{topic}.schema.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    from importlib.resources import files

    return json.loads(files("streamer.schemas").joinpath(path.name).read_text("utf-8"))


class Reader:
    """Turns raw message values into checked, first-seen messages; counts what it drops."""

    def __init__(self, schemas: dict[str, dict[str, Any]], remember: int = 1_000_000) -> None:
        self.validators = {t: Draft202012Validator(s) for t, s in schemas.items()}
        # Bounded: copies arrive close to the original (a redelivery after a restart or a
        # rebalance), so the most recent ids are the ones worth keeping.
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.remember = remember
        self.counts: Counter[str] = Counter()

    def handle(self, topic: str, value: bytes | None) -> dict[str, Any] | None:
        """The message, or None when it is a duplicate, another major version or invalid."""
        try:
            msg = json.loads(value or b"")
        except ValueError:
            self.counts["not_json"] += 1
            return None
        version = msg.get("schema_version") if isinstance(msg, dict) else None
        major = version.partition(".")[0] if isinstance(version, str) else None
        if major != str(MAJOR):
            self.counts["other_major"] += 1
            return None
        if not self.validators[topic].is_valid(msg):
            self.counts["invalid"] += 1
            return None
        key = f"{topic}:{msg[TOPICS[topic]]}"
        if key in self.seen:
            self.counts["duplicate"] += 1
            return None
        self.seen[key] = None
        if len(self.seen) > self.remember:
            self.seen.popitem(last=False)
        self.counts[topic] += 1
        return msg


def describe(topic: str, msg: dict[str, Any]) -> str:
    where = f"{msg['sku']}@{msg['location']}"
    if topic == "forecasts":
        week = sum(step["mean"] for step in msg["horizon"])
        return (
            f"forecast {where} from {msg['issued_at']}: {week:.1f} units over "
            f"{len(msg['horizon'])} buckets ({msg['model']})"
        )
    return (
        f"alert {where} {msg['status']} ({msg['severity']}) at {msg['ts']}: on hand "
        f"{msg['on_hand']}, reorder point {msg['reorder_point']}"
    )


def bootstrap_servers(explicit: str | None, home: Path = Path(".shelfcast")) -> str | None:
    if explicit or os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return explicit or os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    state = home / "embedded.json"
    if state.is_file():
        return json.loads(state.read_text())["kafka_bootstrap_servers"]
    return None


def consume(
    bootstrap: str,
    group: str,
    reader: Reader,
    out: Callable[[str], None] = print,
    max_messages: int | None = None,
    idle_seconds: float | None = None,
    topics: Iterable[str] = TOPICS,
) -> int:
    """Read until ``max_messages`` were kept or ``idle_seconds`` passed without any message;
    returns how many were kept."""
    import time

    from confluent_kafka import Consumer, KafkaException

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe(list(topics))
    kept, last = 0, time.monotonic()
    try:
        while max_messages is None or kept < max_messages:
            record = consumer.poll(0.5)
            if record is None:
                if idle_seconds is not None and time.monotonic() - last > idle_seconds:
                    break
                continue
            last = time.monotonic()
            if record.error():
                raise KafkaException(record.error())
            msg = reader.handle(record.topic(), record.value())
            if msg is not None:
                kept += 1
                out(describe(record.topic(), msg))
            consumer.commit(record, asynchronous=False)  # handled, so not read again
    finally:
        consumer.close()
    return kept


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--bootstrap", help="Kafka brokers (KAFKA_BOOTSTRAP_SERVERS)")
    ap.add_argument("--group", default="shelfcast-example", help="consumer group")
    ap.add_argument("--schemas", type=Path, default=SCHEMAS, help="folder of the JSON Schemas")
    ap.add_argument("--max", type=int, help="stop after this many messages")
    ap.add_argument("--idle", type=float, help="stop after this many seconds without a message")
    args = ap.parse_args(argv)
    bootstrap = bootstrap_servers(args.bootstrap)
    if not bootstrap:
        print(
            "consume.py: no Kafka: pass --bootstrap, set KAFKA_BOOTSTRAP_SERVERS, or start "
            "`shelfcast worker` in this folder",
            file=sys.stderr,
        )
        return 2
    reader = Reader({t: load_schema(t, args.schemas) for t in TOPICS})
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stop, and still print the counts
        consume(bootstrap, args.group, reader, max_messages=args.max, idle_seconds=args.idle)
    print(f"messages by outcome: {dict(reader.counts)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
