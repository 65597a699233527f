"""The series key ``sku@location`` that names one series everywhere, and its two parts.

It lives in ``models`` because both sides use it and ``models`` never imports ``streamer``.
Event validation keeps ``@`` out of both names (``streamer.topics.events``), so a key splits
back into exactly the two names it was made of.

>>> series_key("A1", "UK")
'A1@UK'
>>> sku_of("A1@UK")
'A1'
>>> split_series("A1@UK")
('A1', 'UK')
>>> is_rollup(series_key("A1", ALL_LOCATIONS))
True
"""

from __future__ import annotations

__all__ = ["ALL_LOCATIONS", "is_rollup", "series_key", "sku_of", "split_series"]

# The location of a SKU's rollup over all its locations: reserved, no event may name it
ALL_LOCATIONS = "*"


def series_key(sku: str, location: str) -> str:
    return f"{sku}@{location}"


def split_series(series: str) -> tuple[str, str]:
    """``(sku, location)`` of a series key."""
    sku, _, location = series.partition("@")
    return sku, location


def sku_of(series: str) -> str:
    return series.partition("@")[0]


def is_rollup(series: str) -> bool:
    return series.endswith(f"@{ALL_LOCATIONS}")
