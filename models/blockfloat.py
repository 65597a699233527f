"""Blocks of numbers as int16 codes sharing one power-of-two scale per row (block floating
point): half the bytes of float32 where a row's numbers are of like size.

A row's value is ``code * 2**exp``, with the exponent that puts the row's largest code
between 2**14 and 2**15: each value is kept to within 2**-15 of its row's largest. The
running quantiles of a model's errors (``models.quantiles.Bands``) at 7 horizons and 3
levels are one row: 42 bytes and an exponent instead of 84 bytes. A row's small values
lose what is below that step: a quantile 30,000 times smaller than its row's largest no
longer moves by steps under a 65,000th of that largest.

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
EXP_MAX = 127


def _per_row(exp: np.ndarray, ndim: int) -> np.ndarray:
    return np.asarray(exp, np.int32).reshape(-1, *(1,) * (ndim - 1))


def _power(dtype: np.dtype, exp: np.ndarray, ndim: int) -> np.ndarray:
    """``2**exp`` per row, in ``dtype``, shaped to scale rows of ``ndim`` axes. A product by
    a power of two is exact (or rounded as ``ldexp`` rounds it), and ``ldexp`` over every
    value took seven times as long as this product: a call per element."""
    return np.ldexp(dtype.type(1.0), _per_row(exp, ndim))


def pack(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values [n, ...]`` as int16 codes and one int8 exponent per row, rounded to nearest.
    Packing what ``decode`` gave gives the same codes back. Exponents stop at ``EXP_MIN``,
    so values under 2**-100, far below any count's error, round to 0; a value that is not
    finite packs as 0 (the running quantiles never hold one: a worker must not stop on it).

    >>> decode(*pack(np.array([[np.nan, 2.0], [1e-36, 0.0]]))).tolist()
    [[0.0, 2.0], [0.0, 0.0]]
    """
    values = np.asarray(values)
    if not np.isfinite(values).all():  # one pass to check: a copy for the rare row that needs it
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    axes = tuple(range(1, values.ndim))
    biggest = np.abs(values).max(axis=axes, initial=0.0)
    exp = np.where(biggest > 0, np.frexp(biggest)[1] - 15, EXP_MIN)
    # a largest value that rounds up to 2**15 takes the next exponent, still to nearest; the
    # row's largest code is its largest value's (scaling by 2**-exp and rounding keep order)
    over = np.rint(np.ldexp(biggest, -exp)) > CODE_MAX
    exp = np.clip(exp + over, EXP_MIN, EXP_MAX)
    scaled = np.rint(values * _power(values.dtype, -exp, values.ndim))
    codes = np.clip(scaled, -CODE_MAX, CODE_MAX, out=scaled).astype(np.int16)
    return codes, exp.astype(np.int8)


def decode(codes: np.ndarray, exp: np.ndarray) -> np.ndarray:
    """The values of ``codes [n, ...]`` at exponents ``exp [n]``, exactly, as float32."""
    return codes.astype(np.float32) * _power(np.dtype(np.float32), exp, codes.ndim)
