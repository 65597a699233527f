"""The replay's produce order (the rest of the backtest runs end to end in tests/test_e2e.py)."""

from streamer.backtest import training_segments
from streamer.replay import Produced

DAY = 86_400.0


def test_inventory_goes_a_day_ahead_and_segments_cut_on_produce_order() -> None:
    def ev(role: str, day: float) -> Produced:
        return Produced(role, "A1", b"", day * DAY)

    events = [ev("orders", 0.4), ev("orders", 1.4), ev("orders", 2.4), ev("orders", 3.4)]
    events += [ev("inventory", 1.6), ev("inventory", 3.6)]
    segments = training_segments(events, every=2, bucket_seconds=int(DAY))
    got = [([(e.role[0], e.ts / DAY) for e in seg], through) for seg, through in segments]
    # the delivery of day 1.6 goes before the order of day 1.4; the one of day 3.6, put on
    # the topic at day 2.6, is in the segment after which the trainer sees through day 2
    assert got == [
        ([("o", 0.4), ("i", 1.6), ("o", 1.4), ("o", 2.4), ("i", 3.6)], 2),
        ([("o", 3.4)], None),
    ]
