"""Block floating point: what the running quantiles are kept as."""

from __future__ import annotations

import numpy as np
import pytest

from models.blockfloat import EXP_MIN, decode, pack
from models.quantiles import Bands, from_half


def test_every_value_is_within_a_32768th_of_its_rows_largest() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(0, 1, (500, 7, 3)) * 10.0 ** rng.uniform(-3, 5, (500, 1, 1))
    codes, exp = pack(values.astype(np.float32))
    back = decode(codes, exp)
    largest = np.abs(values).max(axis=(1, 2))
    assert (np.abs(back - values).max(axis=(1, 2)) <= largest * 2.0**-15).all()
    assert codes.dtype == np.int16 and exp.dtype == np.int8


def test_packing_what_was_decoded_gives_the_same_codes() -> None:
    codes, exp = pack(np.array([[0.1, -7.0, 12345.0], [0.0, 0.0, 0.0], [1e-3, 0.0, 2e-3]]))
    again = pack(decode(codes, exp))
    np.testing.assert_array_equal(again[0], codes)
    np.testing.assert_array_equal(again[1], exp)
    assert exp[1] == EXP_MIN


def test_a_snapshot_of_float32_quantiles_loads_packed() -> None:
    bands = Bands(horizon=2)
    bands.take(np.full(2, -1))
    state = bands.state()
    old = {k: v for k, v in state.items() if k != "q_exp"}
    old["q"] = np.array([[[-1.5, 0.0, 2.25], [0.0, 0.5, 4.0]], [[0.0] * 3] * 2], np.float32)
    old["spread"] = np.array([0.75, np.nan], np.float32)
    bands.load(old)
    np.testing.assert_array_equal(bands.quantiles(), old["q"])
    assert bands.state()["q"].dtype == np.int16
    assert from_half(bands.spread)[0] == 0.75 and np.isnan(from_half(bands.spread)[1])


def test_edges_pack_to_the_nearest_code_and_never_wrap() -> None:
    largest = np.float32(1023.99976)  # rounds up to 2**15 codes at its exponent
    codes, exp = pack(np.array([[largest, 1.0]], np.float32))
    assert abs(decode(codes, exp)[0, 0] - largest) <= 2.0 ** (int(exp[0]) - 1)
    tiny, _ = pack(np.array([[1e-36, 0.0]]))  # below what int8 exponents reach: zeros
    assert not tiny.any()
    assert pack(np.zeros((0, 7, 3), np.float32))[0].shape == (0, 7, 3)  # an empty partition


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_codes_and_values_are_those_of_ldexp_to_the_bit(dtype: type) -> None:
    """Rows are scaled by a product with ``2**exp``, exact where ``ldexp`` is and rounded
    alike where the result is subnormal: every code and value is the definition's, over
    every magnitude a row can have (decoded as float32)."""
    rng = np.random.default_rng(1)
    values = rng.normal(0, 1, (400, 7, 3)) * 10.0 ** rng.integers(-45, 37, (400, 1, 1))
    values = values.astype(dtype)
    values[rng.random(values.shape) < 0.05] = 0.0
    codes, exp = pack(values)
    per_row = exp.astype(np.int32).reshape(-1, 1, 1)
    expected = np.clip(np.rint(np.ldexp(values, -per_row)), -32767, 32767).astype(np.int16)
    np.testing.assert_array_equal(codes, expected)
    np.testing.assert_array_equal(decode(codes, exp), np.ldexp(codes.astype(np.float32), per_row))
