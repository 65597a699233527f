"""Blocks of numbers as int16 codes sharing one power-of-two scale per row (block floating
point): half the bytes of float32 where a row's numbers are of like size.

A row's value is ``code * 2**exp``, with the exponent that puts the row's largest code
between 2**14 and 2**15: each value is kept to within 2**-15 of its row's largest. The
running quantiles of a model's errors (``models.quantiles.Bands``) at 7 horizons and 3
levels are one row: 42 bytes and an exponent instead of 84 bytes.

>>> codes, exp = pack(np.array([[1.5, -0.25, 300.0], [0.0, 0.0, 0.0]]))
>>> decode(codes, exp).tolist()
[[1.5, -0.25, 300.0], [0.0, 0.0, 0.0]]
>>> codes.dtype, codes[0].tolist(), exp.tolist()
(dtype('int16'), [96, -16, 19200], [-6, -100])
"""

from __future__ import annotations

import numpy as np

__all__ = ["EXP_MIN", "decode", "pack"]

CODE_MAX = 32767
EXP_MIN = -100  # a row of zeros: far below anything a count's errors need


def _per_row(exp: np.ndarray, ndim: int) -> np.ndarray:
    return np.asarray(exp, np.int32).reshape(-1, *(1,) * (ndim - 1))


def pack(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values [n, ...]`` as int16 codes and one int8 exponent per row, rounded to nearest.
    Packing what ``decode`` gave gives the same codes back."""
    biggest = np.abs(values).reshape(len(values), -1).max(axis=1, initial=0.0)
    exp = np.where(biggest > 0, np.frexp(biggest)[1] - 15, EXP_MIN)
    scaled = np.ldexp(values, -_per_row(exp, np.ndim(values)))
    codes = np.clip(np.rint(scaled), -CODE_MAX, CODE_MAX).astype(np.int16)
    return codes, exp.astype(np.int8)


def decode(codes: np.ndarray, exp: np.ndarray) -> np.ndarray:
    """The values of ``codes [n, ...]`` at exponents ``exp [n]``, exactly, as float32."""
    return np.ldexp(codes.astype(np.float32), _per_row(exp, codes.ndim))
