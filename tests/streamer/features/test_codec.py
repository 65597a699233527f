"""The wire format: docs/redis-layout.md and the scripts against streamer/features/codec.py."""

import re
from importlib import resources

import numpy as np
import orjson
import pytest

from streamer.alerts.reorder import ReorderPoints, packed_rops
from streamer.features import codec
from streamer.features.codec import (
    ENUMS,
    OUTBOX_FIELDS,
    RECORDS,
    ROP_FIELDS_V1,
    ROP_FIELDS_V2,
    AlertRecord,
    EventKind,
    StockEffect,
    encode_events,
    outbox_entry,
    rop_values,
    unpack_rop,
)
from tests.conftest import ROOT

LAYOUT = ROOT / "docs" / "redis-layout.md"


def _table(section: str) -> list[list[str]]:
    """The rows of the first table under heading ``section`` of the layout doc, as cells."""
    text = LAYOUT.read_text()
    start = text.index(f"\n{section}\n")
    lines = text[start:].splitlines()[2:]
    rows = []
    for line in lines:
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if not set("".join(cells)) <= set("-"):
            rows.append(cells)
    return rows[1:]  # after the header


def _names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_the_layout_doc_lists_every_record_with_codecs_fields_in_order() -> None:
    documented = {
        _names(record)[0]: tuple(_names(fields)) for record, _, fields in _table("### Records")
    }
    assert documented == RECORDS


def test_the_layout_doc_lists_every_enum_with_codecs_values() -> None:
    documented = {}
    for enum, values, _ in _table("### Enums"):
        pairs = re.findall(r"`([^`]+)` = `?([^`,]+)`?", values)
        documented[_names(enum)[0]] = {name: value for name, value in pairs}
    assert documented == {
        name: {m.name.lower(): str(m.value) for m in enum} for name, enum in ENUMS.items()
    }


@pytest.mark.parametrize("script", ["apply", "read_close"])
def test_the_scripts_read_only_fields_and_enum_values_codec_defines(script: str) -> None:
    text = resources.files("streamer.features.lua").joinpath(f"{script}.lua").read_text()
    lua = {"E": "event", "P": "pending", "O": "outbox"}
    for alias, field in re.findall(r"\b([EPO])\.(\w+)", text):
        assert field in RECORDS[lua[alias]], (script, alias, field)
    for record, field in re.findall(r"\bF\.(\w+)\.(\w+)", text):
        assert field in RECORDS[record], (script, record, field)
    enums = {"STATUS": "status", "KIND": "kind", "ALERT": "alert"}
    for alias, value in re.findall(r"\b(STATUS|KIND|ALERT)\.(\w+)", text):
        assert value in {m.name.lower() for m in ENUMS[enums[alias]]}, (script, alias, value)


def test_an_event_goes_as_its_fields_in_order_with_decimals_as_text() -> None:
    effect = StockEffect(EventKind.DELTA, "A1@UK", "d1", 3, 5, 7, None, "inventory:0", 9, 2.5)
    [sent] = orjson.loads(encode_events([effect]))
    assert dict(zip(codec.EVENT_FIELDS, sent, strict=True)) == {
        "kind": "d", "series": "A1@UK", "event_id": "d1", "bucket": 3, "ts_ms": 5,
        "quantity": 7, "unit_price": None, "offsets_field": "inventory:0", "offset": 9,
        "lead_time_days": "2.5", "moves_clock": True, "po_id": None, "pack_size": None,
        "customer_id": None, "promo": False,
    }  # fmt: skip


def test_an_outbox_entry_from_before_stock_on_order_reads_with_none_on_order() -> None:
    rop = "4.0|3.0|1.0|1.0|3.0|A1@UK|9|tsb@2"
    record = AlertRecord.parse(orjson.dumps(["A1@UK", "raised", 2, 4, rop, 86_400_000]))
    assert (record.on_order, record.pack_size, record.ts) == (0, None, 86_400.0)
    assert AlertRecord.parse(outbox_entry("A1@UK", "raised", 2, 4, rop, 86_400.0)) == record
    assert len(orjson.loads(outbox_entry("A1@UK", "raised", 2, 4, "", 1.0))) == len(OUTBOX_FIELDS)


def test_a_reorder_point_is_stored_whole_and_read_back_in_either_format() -> None:
    rops = ReorderPoints(*(np.array([v]) for v in (3.0, 4.5, 1.25, 0.5)), 0.9, 7.0)
    [stored] = packed_rops(rops, ["A1@UK|9|tsb@2"])
    assert unpack_rop(stored) == {
        "rop": 5.75, "lt_demand": 4.5, "safety": 1.25, "daily_mean": 0.5, "rop_lead": 3.0,
        "service_level": 0.9, "review_days": 7.0, "service_measure": "cycle",
        "forecast_id": "A1@UK|9|tsb@2",
    }  # fmt: skip
    # written before the settings were kept: the same parts, no settings
    v1 = unpack_rop("5.75|4.5|1.25|0.5|3.0|A1@UK|9|tsb@2")
    assert v1 == {k: v for k, v in unpack_rop(stored).items() if k in ROP_FIELDS_V1}
    # written before the measure was kept: all but it
    v2 = unpack_rop('[5.75,4.5,1.25,0.5,3.0,0.9,7.0,"A1@UK|9|tsb@2"]')
    assert v2 == {k: v for k, v in unpack_rop(stored).items() if k in ROP_FIELDS_V2}
    assert rop_values([stored, "5.75|4.5|1.25|0.5|3.0|A1@UK|9|tsb@2"]).tolist() == [5.75, 5.75]


def test_a_nan_in_a_stored_reorder_point_reads_back_as_nan() -> None:
    stored = '[null,1.0,2.0,3.0,4.0,0.95,7.0,"A1@UK|9|tsb@2"]'  # orjson writes NaN as null
    assert np.isnan(rop_values([stored, False])).all()
    assert np.isnan(unpack_rop(stored)["rop"])
