"""A bank's arrays as one compact binary snapshot: versioned, never pickle, bounded.

Layout (docs/redis-layout.md), all little-endian, the whole zlib-compressed:

* ``SHELFCAST-BANK\\0\\0`` (16 bytes), format version (uint32), header length (uint32);
* the header, UTF-8 JSON: ``{"series": n, "arrays": [[name, dtype, shape], ...]}``;
* the series names, UTF-8, joined by ``\\n``, preceded by their byte length (uint64);
* each array's bytes in header order, C order.

Only numeric, bool and fixed-width string dtypes are accepted, so loading never runs code.
Decompression stops at ``max_bytes``: a corrupt or hostile blob cannot exhaust memory.

>>> blob = pack({"x": np.arange(3.0), "v": np.array("v2")}, ["a@UK", "b@UK", "c@FR"])
>>> state, series = unpack(blob)
>>> state["x"].tolist(), str(state["v"]), series
([0.0, 1.0, 2.0], 'v2', ['a@UK', 'b@UK', 'c@FR'])
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Sequence

import numpy as np

__all__ = ["MAGIC", "MAX_BYTES", "READS", "VERSION", "SnapshotError", "pack", "unpack"]

MAGIC = b"SHELFCAST-BANK\0\0"
# 2: pending forecasts as bfloat16 bits. The container is as in 1, but a worker of either
# release would read the other's arrays wrongly, so each refuses the other's and rebuilds.
# 3: the error moments as int16 codes, which a release reading 2 would take for floats; this
# one reads 2 as well (its float moments are packed on load)
VERSION = 3
READS = (2, 3)
MAX_BYTES = 8 << 30
_INPUT_STEP = 1 << 20  # compressed bytes fed at a time
_OUTPUT_STEP = 16 << 20  # most bytes one step decompresses
_KINDS = "biufU"  # bool, signed and unsigned int, float, fixed-width unicode


class SnapshotError(ValueError):
    """A snapshot that cannot be read: corrupt, truncated, too large or of another format."""


def pack(state: dict[str, np.ndarray], series: Sequence[str], level: int = 1) -> bytes:
    arrays = []
    for name, value in state.items():
        a = np.asarray(value)
        if a.dtype.kind not in _KINDS:
            raise TypeError(f"{name}: dtype {a.dtype} cannot go in a snapshot")
        arrays.append((name, a.dtype.newbyteorder("<"), a))
    header = json.dumps(
        {"series": len(series), "arrays": [[n, d.str, list(a.shape)] for n, d, a in arrays]}
    ).encode()
    names = "\n".join(series).encode()
    parts = [MAGIC, struct.pack("<II", VERSION, len(header)), header]
    parts += [struct.pack("<Q", len(names)), names]
    parts += [np.ascontiguousarray(a, d).tobytes() for _, d, a in arrays]
    return zlib.compress(b"".join(parts), level)


def _inflate(pieces: Sequence[bytes], max_bytes: int) -> bytes:
    """The decompressed snapshot of the compressed ``pieces``, a bounded step at a time: one
    ``zlib.decompress`` of a large snapshot holds the GIL for a quarter of a second while it
    assembles its output, which would stall the event loop of the thread restoring it."""
    d = zlib.decompressobj()
    out: list[bytes] = []
    size = 0
    try:
        for piece in pieces:
            view = memoryview(piece)
            for i in range(0, len(view), _INPUT_STEP):
                data: bytes | memoryview = view[i : i + _INPUT_STEP]
                while data:
                    out.append(d.decompress(data, _OUTPUT_STEP))
                    size += len(out[-1])
                    if size > max_bytes:
                        raise SnapshotError(f"decompresses to more than {max_bytes} bytes")
                    data = d.unconsumed_tail
    except zlib.error as exc:
        raise SnapshotError(f"not a zlib stream: {exc}") from exc
    if not d.eof:
        raise SnapshotError("truncated: the zlib stream does not end")
    return b"".join(out)  # releases the GIL while it copies


def unpack(
    blob: bytes | Sequence[bytes], max_bytes: int = MAX_BYTES
) -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays and series names of a ``pack``ed snapshot, whole or in the pieces it was
    stored in; ``SnapshotError`` if unreadable."""
    raw = memoryview(_inflate([blob] if isinstance(blob, bytes) else blob, max_bytes))
    try:
        if bytes(raw[: len(MAGIC)]) != MAGIC:
            raise SnapshotError("not a shelfcast bank snapshot")
        at = len(MAGIC)
        version, size = struct.unpack_from("<II", raw, at)
        if version not in READS:
            formats = " and ".join(map(str, READS))
            raise SnapshotError(f"snapshot format {version}; this version reads {formats}")
        at += 8
        header = json.loads(bytes(raw[at : at + size]))
        at += size
        (n_names,) = struct.unpack_from("<Q", raw, at)
        at += 8
        text = bytes(raw[at : at + n_names]).decode()
        series = text.split("\n") if header["series"] else []
        at += n_names
        state = {}
        for name, dtype, shape in header["arrays"]:
            dt = np.dtype(dtype)
            if dt.kind not in _KINDS:
                raise SnapshotError(f"{name}: dtype {dtype} is not allowed")
            count = int(np.prod(shape, dtype=np.int64))
            state[name] = (
                np.frombuffer(raw, dt, count, at).reshape(shape).astype(dt.newbyteorder("="))
            )
            at += count * dt.itemsize
    except (struct.error, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        if isinstance(exc, SnapshotError):
            raise
        raise SnapshotError(f"corrupt snapshot: {exc}") from exc
    if len(series) != header["series"] or at != len(raw):
        raise SnapshotError("corrupt snapshot: sizes do not add up")
    return state, series
