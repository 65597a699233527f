"""Per-series model choice: the model with the lowest recent error publishes.

A model without enough scored forecasts yet cannot win; then the fallback publishes if it is
ready, else the first ready model in the bank's order, else nothing.

>>> import numpy as np
>>> mae = np.array([[1.0, np.nan, np.nan], [0.5, np.nan, np.nan]])
>>> ready = np.array([[True, True, False], [True, False, True]])
>>> select(mae, ready, fallback=0).tolist()
[1, 0, 1]
"""

from __future__ import annotations

import numpy as np

NONE = -1  # no model ready: the series publishes nothing at this close


def select(recent_mae: np.ndarray, ready: np.ndarray, fallback: int) -> np.ndarray:
    """The chosen model's index per row, from ``recent_mae`` and ``ready`` ``[models, n]``."""
    score = np.where(ready & ~np.isnan(recent_mae), recent_mae, np.inf)
    best = np.argmin(score, axis=0)
    scored = np.isfinite(score.min(axis=0, initial=np.inf))
    first = np.argmax(ready, axis=0)
    chosen = np.where(ready[fallback], fallback, np.where(ready.any(axis=0), first, NONE))
    return np.where(scored, best, chosen)
