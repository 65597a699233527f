"""The published JSON Schemas (schemas/) agree with the code that reads and writes the topics.

Input schemas are checked against the worker's own validation (streamer.topics.events) and
against the events the replay tool produces; output schemas against messages from the real builders
(streamer.publish.messages) fed with real model forecasts and reorder points.
"""

from __future__ import annotations

import base64
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jsonschema import Draft202012Validator

from models.bank import COMBINED, Bank
from models.rollup import ROLLUP, combine
from models.rollup import VERSION as ROLLUP_VERSION
from models.testing import close_of
from streamer.alerts.reorder import CLEARED, RAISED, ReorderPoint, reorder_point
from streamer.config.settings import Settings
from streamer.ops.replay import read_events
from streamer.publish.messages import (
    alert_message,
    dlq_message,
    forecast_id,
    forecast_message,
    forecast_values,
    output,
)
from streamer.topics import events
from streamer.topics.contracts import SCHEMA_VERSION, compatible, schema
from streamer.topics.events import FORBIDDEN_IN_NAMES, Invalid, parse_inventory, parse_order

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "schemas"
SAMPLE = ROOT / "streamer" / "data" / "online_retail_sample.csv.gz"
INPUTS = ("orders", "inventory")
OUTPUTS = ("forecasts", "low-stock-alerts", "shelfcast-dlq")
LIMIT = 65_536
SERIES = "85123A@United Kingdom"
DAY = 86_400
BUCKET = 14_975  # 2011-01-01


def load(topic: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{topic}.schema.json").read_text(encoding="utf-8"))


def validator(topic: str) -> Draft202012Validator:
    return Draft202012Validator(load(topic))


def assert_valid(topic: str, message: object) -> None:
    errors = [
        f"{list(e.absolute_path)}: {e.message}" for e in validator(topic).iter_errors(message)
    ]
    assert not errors, f"{topic}: {errors}"
    if topic in OUTPUTS:
        # the schemas accept added fields (for consumers of older minors); the builders emit
        # only documented ones, at the current version
        assert isinstance(message, dict)
        properties = load(topic)["properties"]
        assert set(message) <= set(properties), set(message) - set(properties)
        assert message["schema_version"] == SCHEMA_VERSION
        for step in message.get("horizon", []):
            assert set(step) <= set(properties["horizon"]["items"]["properties"])


def wire(message: dict[str, object]) -> object:
    """The message as a consumer sees it: serialised by the worker, parsed back."""
    return json.loads(output("t", "k", message).value)


# --- the schema files themselves ---------------------------------------------------------------


def test_there_is_one_schema_per_topic() -> None:
    files = {p.name.removesuffix(".schema.json") for p in SCHEMAS.glob("*.schema.json")}
    assert files == set(INPUTS + OUTPUTS)
    assert files == set(Settings().kafka.topics.values())


@pytest.mark.parametrize("topic", INPUTS + OUTPUTS)
def test_schema_is_a_valid_draft_2020_12_schema(topic: str) -> None:
    schema = load(topic)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://shelfcast.dev/schemas/v1/{topic}.schema.json"
    assert schema["title"] == topic
    assert schema["type"] == "object"
    assert "docs/topics.md" in schema["description"]
    assert set(schema["required"]) <= set(schema["properties"])
    for name, prop in schema["properties"].items():
        assert prop.get("title") == name, name
        assert prop.get("description"), f"{topic}.{name} has no description"


@pytest.mark.parametrize("topic", INPUTS)
def test_input_schemas_let_producers_add_fields(topic: str) -> None:
    assert load(topic)["additionalProperties"] is True


@pytest.mark.parametrize("topic", OUTPUTS)
def test_output_schemas_require_every_field_and_accept_fields_added_later(topic: str) -> None:
    schema = load(topic)
    assert schema["additionalProperties"] is True  # a 1.0 consumer reads 1.x messages
    assert set(schema["required"]) == set(schema["properties"])
    assert "schema_version" in schema["required"]


@pytest.mark.parametrize("topic", INPUTS + OUTPUTS)
def test_schemas_ship_in_the_package(topic: str) -> None:
    assert schema(topic) == load(topic)  # streamer/schemas: what an installed wheel reads


def test_version_policy_minor_additions_pass_a_new_major_does_not() -> None:
    msg = dlq_message(b"x", None, "bad_field", "d", "orders", 0, 0)
    v = validator("shelfcast-dlq")
    assert v.is_valid(wire(msg))
    assert v.is_valid({**msg, "schema_version": "1.7", "added_in_1_7": [1]})
    assert not v.is_valid({**msg, "schema_version": "2.0"})
    assert not v.is_valid({k: x for k, x in msg.items() if k != "schema_version"})
    assert compatible(SCHEMA_VERSION) and compatible("1.7") and not compatible("2.0")
    doc = (ROOT / "docs" / "topics.md").read_text(encoding="utf-8")
    assert "## Versions and compatibility" in doc


def test_dlq_reasons_are_exactly_the_reject_codes_of_the_parser() -> None:
    source = Path(events.__file__).read_text(encoding="utf-8")
    codes = set(re.findall(r'_Reject\(\s*"([a-z_]+)"', source))
    assert len(codes) >= 10
    assert set(load("shelfcast-dlq")["properties"]["reason"]["enum"]) == codes


def test_docs_list_every_dlq_reason() -> None:
    doc = (ROOT / "docs" / "topics.md").read_text(encoding="utf-8")
    for reason in load("shelfcast-dlq")["properties"]["reason"]["enum"]:
        assert f"`{reason}`" in doc, reason
    for topic in INPUTS + OUTPUTS:
        assert f"schemas/{topic}.schema.json" in doc, topic


# --- output messages from the real builders ----------------------------------------------------


def steps(*means: float, spread: float = 2.0) -> np.ndarray:
    return np.array([[m, max(m - spread, 0.0), max(m, 0.0), max(m + spread, 0.0)] for m in means])


@pytest.mark.parametrize("size", [DAY, 3_600, 900, 2 * DAY])
def test_forecast_message_matches_the_schema(size: int) -> None:
    bucket = BUCKET * DAY // size
    msg = forecast_message(
        SERIES, bucket, size, "holt_winters", "river-hw-1", steps(4.123456, 3.5, 0.0, -0.75)
    )
    assert_valid("forecasts", msg)
    assert_valid("forecasts", wire(msg))
    assert msg["forecast_id"] == forecast_id(SERIES, bucket, "holt_winters", "river-hw-1")
    assert msg["forecast_id"] == f"{SERIES}|{bucket}|holt_winters@river-hw-1"


def test_a_rollup_forecast_matches_the_schema() -> None:
    parts = [steps(4.0, 0.0, 2.5), steps(1.0, 3.0, 0.5, spread=0.5)]
    rollup = combine(np.array(parts), np.array([0, 0]), 1)[0]
    msg = forecast_message("85123A@*", BUCKET, DAY, ROLLUP, ROLLUP_VERSION, rollup, locations=2)
    assert_valid("forecasts", wire(msg))
    assert msg["location"] == "*" and msg["locations"] == 2
    assert [s["mean"] for s in msg["horizon"]] == [5.0, 3.0, 3.0]
    single = forecast_message(SERIES, BUCKET, DAY, ROLLUP, ROLLUP_VERSION, rollup)
    assert single["locations"] is None


def test_forecasts_of_a_real_model_bank_match_the_schema() -> None:
    bank = Bank.default(horizon=7)
    bank.align([SERIES])
    demand = [0, 3, 5, 0, 12, 7, 1] * 6
    for i, y in enumerate(demand):
        bank.learn(close_of(BUCKET + i, [float(y)]))
        bank.forecast(close_of(BUCKET + i, [float(y)]))
    last = BUCKET + len(demand) - 1
    fc = bank.forecast(close_of(last, ahead_closed=[k == 3 for k in range(7)]))
    ready = [name for name, s in zip(bank.names, fc.steps, strict=True) if not np.isnan(s).all()]
    assert ready == [
        "seasonal_naive", "moving_average", "tsb", "online_regression",
    ]  # fmt: skip
    assert fc.publishes[0]
    models = [(n, bank.version(i), fc.steps[i]) for i, n in enumerate(bank.names) if n in ready]
    for name, version, s in [*models, (COMBINED, bank.published_version(), fc.published)]:
        msg = forecast_message(SERIES, last, DAY, name, version, s[0])
        assert_valid("forecasts", wire(msg))
        assert len(msg["horizon"]) == 7  # type: ignore[arg-type]


def test_forecast_schema_rejects_what_the_builder_never_emits() -> None:
    msg = forecast_message(SERIES, BUCKET, DAY, "seasonal_naive", "1", steps(2.0))
    v = validator("forecasts")
    assert v.is_valid(msg)
    assert v.is_valid({**msg, "extra": 1})  # added in a later minor: still version 1
    assert not v.is_valid({k: x for k, x in msg.items() if k != "model_version"})
    assert not v.is_valid({**msg, "horizon": []})
    assert not v.is_valid({**msg, "issued_at": "2011-01-02T00:00:00"})  # no zone
    bad_step = {**msg["horizon"][0], "p10": -1.0}  # type: ignore[index]
    assert not v.is_valid({**msg, "horizon": [bad_step]})


def rop_for(means: list[float], lead: float = 3.0, service: float = 0.95) -> ReorderPoint:
    return reorder_point(steps(*means), lead, service, DAY)


@pytest.mark.parametrize(
    ("status", "seq", "on_hand", "severity"),
    [
        (RAISED, 1, 2, "critical"),  # 2 units, ~5/day, lead 3 days
        (RAISED, 3, 16, "warning"),  # 3.2 days of cover > 3 days lead
        (CLEARED, 2, 60, "warning"),
        (RAISED, 5, -4, "critical"),  # orders outran the recorded stock
    ],
)
def test_alert_message_matches_the_schema(
    status: str, seq: int, on_hand: int, severity: str
) -> None:
    rop = rop_for([5.0] * 7)
    fid = forecast_id(SERIES, BUCKET, "moving_average", "1")
    msg = alert_message(SERIES, status, seq, on_hand, rop, fid, BUCKET * DAY + 3_723.5)
    assert_valid("low-stock-alerts", msg)
    assert_valid("low-stock-alerts", wire(msg))
    assert msg["alert_id"] == f"{SERIES}|{seq}|{status}"
    assert msg["severity"] == severity
    assert isinstance(msg["days_of_cover"], float)


def test_alert_without_expected_demand_has_null_days_of_cover() -> None:
    rop = rop_for([0.0] * 7, lead=5.0)
    assert rop.daily_mean == 0.0
    fid = forecast_id(SERIES, BUCKET, "seasonal_naive", "1")
    msg = alert_message(SERIES, RAISED, 1, 0, rop, fid, float(BUCKET * DAY))
    assert msg["days_of_cover"] is None
    assert msg["severity"] == "warning"
    assert_valid("low-stock-alerts", wire(msg))


def test_a_raised_alert_orders_for_no_stock_below_zero() -> None:
    rop = rop_for([5.0] * 7)
    fid = forecast_id(SERIES, BUCKET, "moving_average", "1")
    msg = alert_message(SERIES, RAISED, 1, -7, rop, fid, float(BUCKET * DAY), on_order=4)
    assert (msg["on_hand"], msg["on_order"], msg["inventory_position"]) == (-7, 4, 4)
    assert msg["order_quantity"] == math.ceil(msg["order_up_to"] - 4)
    assert_valid("low-stock-alerts", msg)


def test_alert_schema_rejects_unknown_status_and_severity() -> None:
    rop = rop_for([5.0] * 7)
    msg = alert_message(SERIES, RAISED, 1, 2, rop, "a@b|1|m@1", float(BUCKET * DAY))
    v = validator("low-stock-alerts")
    assert v.is_valid(msg)
    assert not v.is_valid({**msg, "status": "open"})
    assert not v.is_valid({**msg, "severity": "info"})
    assert not v.is_valid({**msg, "days_of_cover": -1.0})
    assert not v.is_valid({k: x for k, x in msg.items() if k != "days_of_cover"})


BAD_INPUTS = [
    b"{not json",
    b"\xff\xfe",
    b"[1, 2]",
    b'{"event_id":"e","ts":"2011-01-04","sku":"a","location":"b","quantity":0}',
    b'{"event_id":"e","ts":"2011-01-04","sku":"a@x","location":"b","quantity":1}',
    b'{"event_id":"e","ts":"2011-01-04","sku":"a","location":"b","quantity":NaN}',
    b'{"event_id":"e","ts":"1970-01-01","sku":"a","location":"b","quantity":1}',
]


@pytest.mark.parametrize("raw", BAD_INPUTS)
@pytest.mark.parametrize("key", [None, b"", SERIES.encode()])
def test_dlq_message_of_a_real_rejection_matches_the_schema(raw: bytes, key: bytes | None) -> None:
    bad = parse_order(raw, LIMIT)
    assert isinstance(bad, Invalid)
    msg = dlq_message(raw, key, bad.reason, bad.detail, "orders", 3, 1_234)
    assert_valid("shelfcast-dlq", wire(msg))
    assert base64.b64decode(str(msg["value_b64"])) == raw
    if key is None:
        assert msg["key_b64"] is None
    else:
        assert base64.b64decode(str(msg["key_b64"])) == key


def test_dlq_message_of_an_oversized_message_matches_the_schema() -> None:
    raw = b'{"event_id":"' + b"x" * 600 + b'"}'
    bad = parse_inventory(raw, 500)
    assert isinstance(bad, Invalid) and bad.reason == "oversized"
    msg = dlq_message(raw, None, bad.reason, bad.detail, "inventory", 0, 0)
    assert_valid("shelfcast-dlq", wire(msg))


def test_dlq_schema_rejects_unknown_reasons_and_bad_base64() -> None:
    msg = dlq_message(b"x", None, "bad_field", "d", "orders", 0, 0)
    v = validator("shelfcast-dlq")
    assert v.is_valid(msg)
    assert not v.is_valid({**msg, "reason": "late"})
    assert not v.is_valid({**msg, "value_b64": "not base64!"})
    assert not v.is_valid({**msg, "offset": -1})


# --- input events from the replay tool ---------------------------------------------------------


def test_replayed_sample_events_match_the_input_schemas_and_the_parser() -> None:
    produced, _ = read_events(SAMPLE, limit=2_000)
    by_role: dict[str, int] = {}
    parse = {"orders": parse_order, "inventory": parse_inventory}
    validators = {role: validator(role) for role in INPUTS}
    for ev in produced:
        payload = json.loads(ev.value)
        errors = [e.message for e in validators[ev.role].iter_errors(payload)]
        assert not errors, (ev.role, payload, errors)
        assert not isinstance(parse[ev.role](ev.value, LIMIT), Invalid), payload
        by_role[ev.role] = by_role.get(ev.role, 0) + 1
    assert by_role.get("orders", 0) > 1_000
    assert by_role.get("inventory", 0) >= 1  # a price-0 adjustment line becomes a delta


# --- invalid inputs: the schema rejects what the parser rejects, where it can say so -----------

ORDER: dict[str, object] = {
    "event_id": "536365:85123A:0",
    "ts": "2011-01-04T10:00:00",
    "sku": "85123A",
    "location": "United Kingdom",
    "quantity": 6,
}
STOCK: dict[str, object] = {**{k: v for k, v in ORDER.items() if k != "quantity"}, "on_hand": 40}
DROP = object()


def change(base: dict[str, object], **fields: object) -> dict[str, object]:
    out = {**base, **fields}
    return {k: v for k, v in out.items() if v is not DROP}


def both_verdicts(topic: str, payload: dict[str, object]) -> tuple[object, bool]:
    parse = parse_order if topic == "orders" else parse_inventory
    return parse(json.dumps(payload).encode(), LIMIT), validator(topic).is_valid(payload)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (change(ORDER, quantity=DROP), "missing_field"),
        (change(ORDER, sku=DROP), "missing_field"),
        (change(ORDER, ts=DROP), "missing_field"),
        (change(ORDER, event_id=None), "missing_field"),
        (change(ORDER, quantity="6"), "wrong_type"),
        (change(ORDER, quantity=True), "wrong_type"),
        (change(ORDER, quantity=1.5), "wrong_type"),
        (change(ORDER, sku=85123), "wrong_type"),
        (change(ORDER, ts=True), "wrong_type"),
        (change(ORDER, ts=[2011, 1, 4]), "wrong_type"),
        (change(ORDER, unit_price="2.55"), "wrong_type"),
        (change(ORDER, quantity=0), "bad_quantity"),
        (change(ORDER, quantity=1_000_001), "bad_quantity"),
        (change(ORDER, quantity=-1_000_001), "bad_quantity"),
        (change(ORDER, sku=""), "bad_field"),
        (change(ORDER, sku="   "), "bad_field"),
        (change(ORDER, sku="85123A@UK"), "bad_field"),
        (change(ORDER, location="{UK}"), "bad_field"),
        (change(ORDER, location="United\tKingdom"), "bad_field"),
        (change(ORDER, location="x" * 101), "bad_field"),
        (change(ORDER, event_id="x" * 201), "bad_field"),
        (change(ORDER, event_id="a\u200bb"), "bad_field"),  # zero-width space: not printable
        (change(ORDER, unit_price=-0.01), "bad_number"),
        (change(ORDER, unit_price=1e7 + 1), "bad_number"),
        (change(ORDER, ts="yesterday"), "bad_time"),
        (change(ORDER, ts="04/01/2011 10:00"), "bad_time"),
        (change(ORDER, ts=1_294_135_200), "time_out_of_range"),  # seconds, not milliseconds
        (change(ORDER, ts=5_000_000_000_000), "time_out_of_range"),
    ],
)
def test_orders_schema_rejects_what_the_parser_rejects(
    payload: dict[str, object], reason: str
) -> None:
    parsed, schema_ok = both_verdicts("orders", payload)
    assert isinstance(parsed, Invalid) and parsed.reason == reason
    assert not schema_ok


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (change(STOCK, delta=5), "missing_field"),  # both on_hand and delta
        (change(STOCK, on_hand=DROP), "missing_field"),  # neither
        (change(STOCK, on_hand=None, delta=None), "missing_field"),
        (change(STOCK, on_hand=-1), "bad_quantity"),
        (change(STOCK, on_hand=DROP, delta=0), "bad_quantity"),
        (change(STOCK, on_hand="40"), "wrong_type"),
        (change(STOCK, lead_time_days=0), "bad_number"),
        (change(STOCK, lead_time_days=366), "bad_number"),
        (change(STOCK, sku="a}b"), "bad_field"),
        (change(STOCK, on_hand=DROP, ordered=5), "missing_field"),  # no po_id
        (change(STOCK, on_hand=DROP, ordered=0, po_id="PO-1"), "bad_quantity"),
        (change(STOCK, on_hand=DROP, delta=5, ordered=5, po_id="PO-1"), "missing_field"),
        (change(STOCK, pack_size=0), "bad_quantity"),
        (change(STOCK, on_hand=DROP, ordered=5, po_id=""), "bad_field"),
    ],
)
def test_inventory_schema_rejects_what_the_parser_rejects(
    payload: dict[str, object], reason: str
) -> None:
    parsed, schema_ok = both_verdicts("inventory", payload)
    assert isinstance(parsed, Invalid) and parsed.reason == reason
    assert not schema_ok


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("orders", ORDER),
        ("orders", change(ORDER, quantity=-3, unit_price=None, order_id="C536379")),
        ("orders", change(ORDER, ts=1_294_135_200_000)),
        ("orders", change(ORDER, ts=1_294_135_200_000.5)),
        ("orders", change(ORDER, ts="2011-01-04T10:00:00Z")),
        ("orders", change(ORDER, ts="2011-01-04 10:00:00.123+01:00")),
        ("orders", change(ORDER, ts="2011-01-04")),
        (
            "orders",
            change(ORDER, sku="Cr\u00e8me br\u00fbl\u00e9e \u2013 12", location="Côte d'Ivoire"),
        ),
        ("orders", change(ORDER, promo="XMAS10", channel="web")),  # producers may add fields
        ("orders", change(ORDER, quantity=1_000_000, unit_price=0)),
        ("inventory", STOCK),
        ("inventory", change(STOCK, on_hand=0, lead_time_days=0.5)),
        ("inventory", change(STOCK, on_hand=None, delta=-13)),
        ("inventory", change(STOCK, on_hand=DROP, delta=250, lead_time_days=365)),
        ("inventory", change(STOCK, on_hand=DROP, ordered=48, po_id="PO-1", pack_size=12)),
        (
            "inventory",
            change(STOCK, on_hand=DROP, ordered=-6, po_id="PO-1", expected_at="2011-01-07"),
        ),
        ("inventory", change(STOCK, on_hand=DROP, delta=48, po_id="PO-1")),
    ],
)
def test_valid_inputs_pass_both_schema_and_parser(topic: str, payload: dict[str, object]) -> None:
    parsed, schema_ok = both_verdicts(topic, payload)
    assert not isinstance(parsed, Invalid), parsed
    assert schema_ok


@pytest.mark.parametrize(
    ("payload", "documented_in"),
    [
        # JSON Schema cannot tell 6.0 from 6; the parser only takes JSON integers.
        (change(ORDER, quantity=6.0), ("quantity", "6.0")),
        # The 2000..2100 range cannot be expressed for ISO text.
        (change(ORDER, ts="1970-01-01T00:00:00"), ("ts", "time_out_of_range")),
        # The pattern checks the shape of the text, not the calendar.
        (change(ORDER, ts="2011-02-30T10:00:00"), ("ts", "bad_time")),
    ],
)
def test_parser_only_rules_are_documented_in_the_schema(
    payload: dict[str, object], documented_in: tuple[str, str]
) -> None:
    parsed, schema_ok = both_verdicts("orders", payload)
    assert isinstance(parsed, Invalid)
    assert schema_ok, "the schema now expresses this rule: move the case to the rejects above"
    field, words = documented_in
    assert words in load("orders")["properties"][field]["description"]


@pytest.mark.parametrize("topic", INPUTS)
@pytest.mark.parametrize("field", ["sku", "location", "event_id"])
def test_name_patterns_are_never_stricter_than_the_parser(topic: str, field: str) -> None:
    """Every character the parser accepts in a name, the schema pattern accepts too, and the
    characters the parser forbids outright are rejected by the pattern."""
    pattern = re.compile(load(topic)["properties"][field]["pattern"])
    forbidden = field != "event_id"
    astral = [0x1F600, 0x1F3F7, 0xE0001, 0xF0000, sys.maxunicode]  # emoji, tag, private use
    for code in [*range(0xD800), *range(0xE000, 0x10000), *astral]:
        ch = chr(code)
        parser_ok = ch.isprintable() and not (forbidden and ch in FORBIDDEN_IN_NAMES)
        value = f"a{ch}b"
        if parser_ok:
            assert pattern.search(value), f"{field}: U+{code:04X} accepted by the parser"
        elif not ch.isprintable() and code < 0xA1:
            assert not pattern.search(value), f"{field}: U+{code:04X} is a control character"
    for ch in FORBIDDEN_IN_NAMES:
        assert bool(pattern.search(f"a{ch}b")) is (not forbidden and ch.isprintable())
    assert not pattern.search(" ")
    assert pattern.search(" x ")


def test_forecast_text_escapes_names_and_keeps_every_value() -> None:
    name = 'A"1\\%s@Zürich'
    values = np.array([[[1.0, 0.0, 0.5, 2.25], [1e-05, 0.0, 0.0, 123456.7891]]])
    ids, texts = forecast_values([name], BUCKET, DAY, ["tsb"], ["2"], values)
    msg = json.loads(texts[0])
    assert ids == [msg["forecast_id"]] and msg["forecast_id"].startswith(name + "|")
    assert (msg["sku"], msg["location"]) == ('A"1\\%s', "Zürich")
    assert [s["p90"] for s in msg["horizon"]] == [2.25, 123456.7891]
    assert msg["horizon"][1]["mean"] == 0.0  # rounded to 4 decimals
    assert_valid("forecasts", msg)
