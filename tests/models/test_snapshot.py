"""The binary snapshot format: round trips, pieces, and every way a blob can be unreadable."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from models.snapshot import MAGIC, VERSION, SnapshotError, pack, unpack

STATE = {
    "x": np.arange(12, dtype=np.float32).reshape(4, 3),
    "n": np.array([1, 2, 3, 4], np.int16),
    "version": np.array("v2"),
}
SERIES = ["a@UK", "b@UK", "c@FR", "d@FR"]


def test_a_snapshot_round_trips_whole_and_in_any_pieces() -> None:
    blob = pack(STATE, SERIES)
    for pieces in ([blob], [blob[:1], blob[1:]], [blob[i : i + 3] for i in range(0, len(blob), 3)]):
        state, series = unpack(pieces)
        assert series == SERIES
        assert {k: v.tolist() for k, v in state.items()} == {
            k: v.tolist() for k, v in STATE.items()
        }
        assert state["x"].dtype == np.float32 and state["n"].dtype == np.int16


def test_a_snapshot_of_the_format_before_is_read() -> None:
    """Format 2 differs from 3 only in its arrays (float32 moments), which the bank packs on
    load (tests/models/test_bank.py)."""
    raw = zlib.decompress(pack(STATE, SERIES))
    assert raw[len(MAGIC) : len(MAGIC) + 4] == VERSION.to_bytes(4, "little") == b"\x03\0\0\0"
    older = raw[: len(MAGIC)] + b"\x02\0\0\0" + raw[len(MAGIC) + 4 :]
    state, series = unpack(zlib.compress(older))
    assert series == SERIES and state["x"].tolist() == STATE["x"].tolist()


def test_decompression_stops_at_the_cap() -> None:
    big = pack({"zeros": np.zeros(1 << 20)}, ["a@UK"])  # 8 MB that compress to a few KB
    with pytest.raises(SnapshotError, match="more than"):
        unpack(big, max_bytes=1 << 20)
    assert unpack(big)[0]["zeros"].shape == (1 << 20,)


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"not zlib at all", "not a zlib stream"),
        (pack(STATE, SERIES)[:-20], "truncated"),
        (zlib.compress(b"PICKLE" + bytes(40)), "not a shelfcast bank snapshot"),
        (zlib.compress(MAGIC + b"\x04\x00\x00\x00" + bytes(4)), "format 4"),
        # an earlier release's: float32 pending forecasts, rebuilt rather than misread
        (
            zlib.compress(MAGIC + b"\x01\x00\x00\x00" + bytes(4)),
            "format 1; this version reads 2 and 3",
        ),
    ],
)
def test_an_unreadable_snapshot_is_one_clear_error(blob: bytes, message: str) -> None:
    with pytest.raises(SnapshotError, match=message):
        unpack(blob)


def test_objects_never_go_in_a_snapshot() -> None:
    with pytest.raises(TypeError, match="cannot go in a snapshot"):
        pack({"o": np.array([object()])}, ["a@UK"])
