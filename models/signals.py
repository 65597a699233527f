"""Customer and promotion signals of a series per bucket: who buys, not only how much.

Five numbers per (series, bucket), from its order lines (returns are not demand; a
cancellation that removes an order of the same size in the same bucket takes that line out of
the largest line, though not out of its customer's counts, which a cancellation does not
name reliably):

* ``buyers``: distinct customers who bought;
* ``new_buyers``: of those, customers buying the series for the first time;
* ``top_buyer``: units bought by the bucket's largest customer;
* ``max_line``: the largest order line;
* ``promo``: units sold on promotion.

Lines without a customer count in ``max_line`` and ``promo`` only. ``Signals`` applies the
rule line by line, exactly as the worker's ``apply.lua`` does, so a backtest's offline panel and
the history a worker keeps in Redis hold the same numbers.

>>> s = Signals()
>>> for customer, qty in (("c1", 5), ("c2", 2), ("c1", 4), (None, 12)):
...     s.order("A@UK", 10, qty, customer, promo=False)
>>> s.order("A@UK", 11, 3, "c2", promo=True)
>>> s.cancel("A@UK", 10, 12)
>>> s.values[("A@UK", 10)], s.values[("A@UK", 11)]
([2.0, 2.0, 9.0, 5.0, 0.0], [1.0, 0.0, 3.0, 3.0, 3.0])
"""

from __future__ import annotations

from collections import Counter, defaultdict

__all__ = ["SIGNALS", "Signals"]

SIGNALS = ("buyers", "new_buyers", "top_buyer", "max_line", "promo")
BUYERS, NEW_BUYERS, TOP_BUYER, MAX_LINE, PROMO = range(len(SIGNALS))


class Signals:
    """The signals of every (series, bucket), built line by line (module docstring)."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0.0] * 5)
        # per series: each customer's latest bucket and its units in that bucket
        self._buyers: dict[str, dict[str, tuple[int, float]]] = defaultdict(dict)
        self._lines: dict[tuple[str, int], Counter[int]] = defaultdict(Counter)

    def order(self, series: str, bucket: int, qty: int, customer: str | None, promo: bool) -> None:
        """An order line (``qty`` > 0)."""
        v = self.values[(series, bucket)]
        self._lines[(series, bucket)][qty] += 1
        v[MAX_LINE] = max(v[MAX_LINE], float(qty))
        if promo:
            v[PROMO] += qty
        if customer is None:
            return
        seen = self._buyers[series].get(customer)
        v[NEW_BUYERS] += seen is None
        units = qty + (seen[1] if seen is not None and seen[0] == bucket else 0.0)
        v[BUYERS] += seen is None or seen[0] != bucket
        v[TOP_BUYER] = max(v[TOP_BUYER], units)
        self._buyers[series][customer] = (bucket, units)

    def cancel(self, series: str, bucket: int, qty: int) -> None:
        """A cancellation of a line of ``qty`` units in the same bucket (it never was demand)."""
        lines = self._lines[(series, bucket)]
        lines[qty] -= 1
        self.values[(series, bucket)][MAX_LINE] = float(
            max((size for size, n in lines.items() if n > 0), default=0)
        )
