import json
import math

import pytest

from streamer.topics.events import Invalid, InventoryEvent, OrderEvent, parse_inventory, parse_order

LIMIT = 65_536


def raw(**fields: object) -> bytes:
    base: dict[str, object] = {
        "event_id": "e1",
        "ts": "2011-01-04T10:00:00",
        "sku": "85123A",
        "location": "United Kingdom",
        "quantity": 6,
    }
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


def test_valid_order_with_iso_time() -> None:
    ev = parse_order(raw(unit_price=2.55), LIMIT)
    assert isinstance(ev, OrderEvent)
    assert ev.series == "85123A@United Kingdom"
    assert ev.quantity == 6 and ev.unit_price == 2.55
    assert ev.ts == 1294135200.0  # naive time is read as UTC


def test_an_order_names_its_customer_and_promotion_optionally() -> None:
    plain = parse_order(raw(), LIMIT)
    assert isinstance(plain, OrderEvent)
    assert plain.customer_id is None and plain.promo is False
    ev = parse_order(raw(customer_id="17850", promo="SPRING10"), LIMIT)
    assert isinstance(ev, OrderEvent) and (ev.customer_id, ev.promo) == ("17850", True)
    for off in (None, False, 0, "", " No ", "false", "0", "none"):
        ev = parse_order(raw(promo=off), LIMIT)
        assert isinstance(ev, OrderEvent) and ev.promo is False, off
    for unusable in (" ", "a\x00b", 17850, "x" * 201):  # the order counts, without a customer
        ev = parse_order(raw(customer_id=unusable), LIMIT)
        assert isinstance(ev, OrderEvent) and ev.customer_id is None, unusable


def test_epoch_milliseconds_and_zone_suffix_agree() -> None:
    a = parse_order(raw(ts=1294135200000), LIMIT)
    b = parse_order(raw(ts="2011-01-04T10:00:00Z"), LIMIT)
    assert isinstance(a, OrderEvent) and isinstance(b, OrderEvent)
    assert a.ts == b.ts


def test_return_is_a_negative_quantity() -> None:
    ev = parse_order(raw(quantity=-3), LIMIT)
    assert isinstance(ev, OrderEvent) and ev.quantity == -3


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "malformed_json"),
        (b"\xff\xfe", "bad_encoding"),
        (b"[1, 2]", "not_an_object"),
        (raw(quantity=...), "missing_field"),
        (raw(sku=...), "missing_field"),
        (raw(quantity="6"), "wrong_type"),
        (raw(quantity=1.5), "wrong_type"),
        (raw(quantity=True), "wrong_type"),
        (raw(quantity=0), "bad_quantity"),
        (raw(quantity=10**9), "bad_quantity"),
        (raw(quantity=10**20), "bad_quantity"),  # beyond 64 bits: still an int, out of range
        (raw(quantity=1e20), "wrong_type"),
        (raw(ts="yesterday"), "bad_time"),
        (raw(ts="1970-01-01T00:00:00"), "time_out_of_range"),
        (raw(ts="2999-01-01T00:00:00"), "time_out_of_range"),
        (raw(sku=""), "bad_field"),
        (raw(sku="a@b"), "bad_field"),
        (raw(location="x" * 101), "bad_field"),
        (raw(unit_price=-1), "bad_number"),
        (
            b'{"event_id":"e","ts":"2011-01-04","sku":"a","location":"b","quantity":NaN}',
            "bad_number",
        ),
        (b'{"quantity": Infinity}', "bad_number"),
    ],
)
def test_bad_orders_are_rejected_with_a_reason(payload: bytes, reason: str) -> None:
    result = parse_order(payload, LIMIT)
    assert isinstance(result, Invalid)
    assert result.reason == reason
    assert result.detail


def test_size_limit_is_enforced_before_parsing() -> None:
    result = parse_order(raw(order_id="x" * 1000), 500)
    assert isinstance(result, Invalid) and result.reason == "oversized"


def test_inventory_snapshot_and_delta() -> None:
    snap = parse_inventory(raw(quantity=..., on_hand=40, lead_time_days=5), LIMIT)
    delta = parse_inventory(raw(quantity=..., delta=-2), LIMIT)
    assert isinstance(snap, InventoryEvent) and snap.on_hand == 40 and snap.lead_time_days == 5
    assert isinstance(delta, InventoryEvent) and delta.delta == -2 and delta.on_hand is None


@pytest.mark.parametrize(
    "fields",
    [
        {"quantity": ...},  # neither on_hand nor delta
        {"quantity": ..., "on_hand": 3, "delta": 1},
        {"quantity": ..., "on_hand": -1},
        {"quantity": ..., "delta": 0},
        {"quantity": ..., "delta": 1, "lead_time_days": 0},
        {"quantity": ..., "delta": 1, "lead_time_days": math.inf},
    ],
)
def test_bad_inventory_is_rejected(fields: dict[str, object]) -> None:
    assert isinstance(parse_inventory(raw(**fields), LIMIT), Invalid)


def test_purchase_orders_deliveries_against_them_and_pack_sizes() -> None:
    po = parse_inventory(
        raw(quantity=..., ordered=48, po_id="PO-1", expected_at="2011-01-07", pack_size=12),
        LIMIT,
    )
    assert isinstance(po, InventoryEvent)
    assert (po.ordered, po.po_id, po.pack_size, po.delta) == (48, "PO-1", 12, None)
    assert po.expected_at == 1_294_358_400.0
    grn = parse_inventory(raw(quantity=..., delta=48, po_id="PO-1"), LIMIT)
    assert isinstance(grn, InventoryEvent) and (grn.delta, grn.po_id) == (48, "PO-1")


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"quantity": ..., "ordered": 5}, "missing_field"),
        ({"quantity": ..., "ordered": 5, "po_id": "P", "delta": 5}, "missing_field"),
        ({"quantity": ..., "on_hand": 5, "po_id": "P"}, "bad_field"),
        ({"quantity": ..., "delta": -5, "po_id": "P"}, "bad_field"),  # a removal fills no order
        ({"quantity": ..., "delta": 5, "expected_at": "2011-01-07"}, "bad_field"),
        ({"quantity": ..., "ordered": 5, "po_id": "P", "expected_at": "soon"}, "bad_time"),
        ({"quantity": ..., "on_hand": 5, "pack_size": 0}, "bad_quantity"),
        ({"quantity": ..., "on_hand": 5, "pack_size": 2.5}, "wrong_type"),
    ],
)
def test_bad_purchase_orders_name_their_reason(fields: dict[str, object], reason: str) -> None:
    bad = parse_inventory(raw(**fields), LIMIT)
    assert isinstance(bad, Invalid) and bad.reason == reason, bad
