"""An alert's message comes from its outbox record alone: the reorder point it was compared
with, as the close stored it with the settings it was computed with."""

import numpy as np
import orjson

from streamer.alerts.outbox import close_alerts
from streamer.alerts.reorder import RAISED, ReorderPoints, packed_rops, reorder_points
from streamer.config.settings import Settings
from streamer.features.codec import AlertRecord, outbox_entry
from streamer.features.store import PartitionClose
from streamer.publish.messages import alert_message, alert_messages, output

FID = "A1@UK|9|tsb@2"
TS = 9 * 86_400.0 + 60


def rops_of(s: Settings, n: int = 1) -> ReorderPoints:
    steps = np.array([[[2.0, 1.0, 2.0, 3.0]] * 7] * n)
    return reorder_points(
        steps, np.full(n, 3.0), s.alerts.service_level, 86_400, None, s.alerts.review_days,
        s.alerts.measure,
    )  # fmt: skip


def test_a_message_states_the_settings_its_reorder_point_was_computed_with() -> None:
    then = Settings.of(service_level=0.9, review_days=14.0, service_measure="fill_rate")
    rops = rops_of(then)
    [value] = packed_rops(rops, [FID])
    record = AlertRecord.parse(outbox_entry("A1@UK", RAISED, 1, 2, value, TS, 3, 6))
    sent = alert_messages(then, [record])
    expected = alert_message("A1@UK", RAISED, 1, 2, rops.row(0), FID, TS, 3, 6)
    assert sent == [output(then.kafka.topics["alerts"], "A1@UK", expected)]
    message = orjson.loads(sent[0].value)
    assert (message["review_days"], message["service_measure"]) == (14.0, "fill_rate")
    # the same record sent again after a restart with other settings: the same message
    now = then.replace(service_level=0.98, review_days=7.0, service_measure="cycle")
    assert alert_messages(now, [record]) == sent


def test_a_reorder_point_stored_before_it_kept_its_settings_takes_the_days() -> None:
    today = Settings.of(service_level=0.9, review_days=14.0)
    [value] = packed_rops(rops_of(today), [FID])
    v1 = "|".join([*map(repr, orjson.loads(value)[:5]), FID])
    old, new = (AlertRecord.parse(outbox_entry("A1@UK", RAISED, 1, 2, v, TS)) for v in (v1, value))
    assert alert_messages(today, [old]) == alert_messages(today, [new])


def test_a_reorder_point_stored_before_it_kept_its_measure_takes_the_days_measure() -> None:
    today = Settings.of(service_measure="fill_rate")
    [value] = packed_rops(rops_of(today), [FID])
    v2 = orjson.dumps([*orjson.loads(value)[:7], FID]).decode()  # no service_measure
    old, new = (AlertRecord.parse(outbox_entry("A1@UK", RAISED, 1, 2, v, TS)) for v in (v2, value))
    assert alert_messages(today, [old]) == alert_messages(today, [new])
    assert orjson.loads(alert_messages(today, [old])[0].value)["service_measure"] == "fill_rate"


def test_a_close_raises_where_the_known_position_reaches_the_new_reorder_point() -> None:
    s = Settings()
    rops = rops_of(s, 3)
    stored = packed_rops(rops, [FID] * 3)
    short = int(rops.value[0]) - 1
    data = PartitionClose(
        ["A1@UK", "B1@UK", "C1@UK"], *(np.zeros(3) for _ in range(3)), np.full(3, np.nan),
        np.array([short, short, 1000]), np.array([True, False, True]), np.zeros(3, bool),
        np.array([4, 0, 0]), np.full(3, np.nan), np.zeros(3, np.int64), np.zeros(3, np.int64),
        1, {},
    )  # fmt: skip
    # B1's stock is unknown, C1's is well above: only A1 raises, its fifth change
    [entry] = close_alerts(s, data, np.arange(3), rops, stored, TS)
    assert entry == outbox_entry("A1@UK", RAISED, 5, short, stored[0], TS, 0, 0)
