"""Demand classes of Syntetos, Boylan and Croston (2005): how often a series sells, and how
much its sizes vary.

``ADI``, the average interval between days with demand (days from the series' first sale,
over those with a sale), against 1.32; ``CV²``, the squared coefficient of variation of the
non-zero sizes, against 0.49:

=============  ==============  ==============
               CV² < 0.49      CV² ≥ 0.49
=============  ==============  ==============
ADI < 1.32     smooth          erratic
ADI ≥ 1.32     intermittent    lumpy
=============  ==============  ==============

Methods and policies rank differently across the classes (on intermittent demand a forecast
of zeros is hard to beat on MAE, on lumpy demand a reorder rule loses most), so results are
worth reading by class.

>>> d = np.array([[0, 3, 3, 3], [2, 2, 2, 2], [5, 0, 0, 5], [1, 0, 0, 9]], float)
>>> [str(c) for c in classify(d, np.array([1, 0, 0, 0]))]
['smooth', 'smooth', 'intermittent', 'lumpy']
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

__all__ = ["ADI_CUT", "CV2_CUT", "DemandClass", "classify"]

ADI_CUT = 1.32
CV2_CUT = 0.49


class DemandClass(StrEnum):
    SMOOTH = "smooth"
    ERRATIC = "erratic"
    INTERMITTENT = "intermittent"
    LUMPY = "lumpy"


def classify(demand: np.ndarray, start: np.ndarray) -> np.ndarray:
    """The class of each row of ``demand [n, days]`` over its days from ``start`` on (an
    object array of DemandClass values; a series with one sale has CV² 0)."""
    days = demand.shape[1]
    live = np.arange(days)[None, :] >= start[:, None]
    sold = (demand > 0) & live
    sales = sold.sum(axis=1)
    adi = (days - start) / np.maximum(sales, 1)
    sizes = np.where(sold, demand, 0.0)
    mean = sizes.sum(axis=1) / np.maximum(sales, 1)
    var = (np.where(sold, (demand - mean[:, None]) ** 2, 0.0)).sum(axis=1) / np.maximum(sales, 1)
    cv2 = np.where(mean > 0, var / np.maximum(mean, 1e-12) ** 2, 0.0)
    frequent, steady = adi < ADI_CUT, cv2 < CV2_CUT
    out = np.empty(len(demand), object)
    out[frequent & steady] = DemandClass.SMOOTH
    out[frequent & ~steady] = DemandClass.ERRATIC
    out[~frequent & steady] = DemandClass.INTERMITTENT
    out[~frequent & ~steady] = DemandClass.LUMPY
    return out
