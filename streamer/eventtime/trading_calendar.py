"""Trading calendar: which buckets the shop is closed, known ahead or observed.

A closed bucket is not a bucket of zero demand: models skip it, evaluation never scores it,
and forecasts for a bucket expected to be closed are zero with no spread.

Two sources, either enough to call a bucket closed:

* configured: ``SHELFCAST_CLOSED_WEEKDAYS`` (e.g. ``5`` for Saturday, 0 = Monday) and
  ``SHELFCAST_CLOSED_DATES`` (``2011-12-25`` or ranges ``2010-12-24..2011-01-03``);
* observed (``SHELFCAST_CLOSED_WHEN_NO_ORDERS``, on by default): a bucket in which the
  partition received no order at all. A partition holds many series, so an open shop always
  sells something in it; an upstream outage is then treated as a closure, not as a sudden
  collapse of demand that the models would learn.

Closures ahead are predicted from the same rule plus habit: a bucket whose slot a week and two
weeks earlier were both closed (no Saturday trading) is expected closed.

>>> cal = TradingCalendar(frozenset({5}), frozenset(), 86_400)
>>> cal.weekday(0)  # 1970-01-01 was a Thursday
3
>>> cal.configured_closed(2), cal.configured_closed(3)
(True, False)
>>> cal.expected_closed(16, {9: True, 2: True})
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from streamer.eventtime.clock import DAY_SECONDS

__all__ = ["WEEK_SECONDS", "TradingCalendar", "parse_dates", "parse_weekdays"]

WEEK_SECONDS = 7 * DAY_SECONDS
_EPOCH_WEEKDAY = 3  # 1970-01-01


def parse_weekdays(text: str) -> frozenset[int]:
    days = frozenset(int(d) for d in text.replace(" ", "").split(",") if d)
    if any(not 0 <= d <= 6 for d in days):
        raise ValueError(f"SHELFCAST_CLOSED_WEEKDAYS: {text!r}: use 0 (Monday) to 6 (Sunday)")
    return days


def parse_dates(text: str) -> frozenset[date]:
    out: set[date] = set()
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        try:
            first, _, last = item.partition("..")
            start = date.fromisoformat(first)
            end = date.fromisoformat(last) if last else start
        except ValueError as exc:
            raise ValueError(
                f"SHELFCAST_CLOSED_DATES: {item!r}: use YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD"
            ) from exc
        out.update(start + timedelta(days=n) for n in range((end - start).days + 1))
    return frozenset(out)


@dataclass(frozen=True)
class TradingCalendar:
    closed_weekdays: frozenset[int]
    closed_dates: frozenset[date]
    bucket_seconds: int
    closed_when_no_orders: bool = True

    @property
    def season(self) -> int:
        """Buckets per week: the seasonal period of the models."""
        return max(WEEK_SECONDS // self.bucket_seconds, 1)

    def _start(self, bucket: int) -> datetime:
        return datetime.fromtimestamp(bucket * self.bucket_seconds, UTC)

    def weekday(self, bucket: int) -> int:
        return (bucket * self.bucket_seconds // DAY_SECONDS + _EPOCH_WEEKDAY) % 7

    def configured_closed(self, bucket: int) -> bool:
        if not self.closed_weekdays and not self.closed_dates:
            return False
        return (
            self.weekday(bucket) in self.closed_weekdays
            or self._start(bucket).date() in self.closed_dates
        )

    def observed_closed(self, bucket: int, partition_orders: int) -> bool:
        """Whether a bucket that just ended counts as closed."""
        return self.configured_closed(bucket) or (
            self.closed_when_no_orders and partition_orders == 0
        )

    def expected_closed(self, bucket: int, closed: Mapping[int, bool]) -> bool:
        """Whether a future ``bucket`` is expected closed, given the closed flags of past
        buckets (missing: open)."""
        if self.configured_closed(bucket):
            return True
        s = self.season
        return bool(closed.get(bucket - s) and closed.get(bucket - 2 * s))
