"""A quixstreams app: per lock and one-minute tumbling window, the number of door events
(state in RocksDB with a compacted changelog topic), emitted on every update to
`door-window-counts`. The reducer keeps the last per-lock sequence number it counted, so
events redelivered after a crash (at-least-once) are not counted twice.

    python quix_door_windows.py <bootstrap> <state dir>
"""

import sys

from quixstreams import Application

bootstrap, state_dir = sys.argv[1], sys.argv[2]

app = Application(
    broker_address=bootstrap,
    consumer_group="door-windows",
    auto_offset_reset="earliest",
    state_dir=state_dir,
    commit_interval=0.5,
    processing_guarantee="at-least-once",
    use_changelog_topics=True,
    # A killed instance's membership ends after this; the restarted one waits for it.
    consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
)

events = app.topic("door-events", key_deserializer="str", value_deserializer="json")
out = app.topic("door-window-counts", key_serializer="str", value_serializer="json")


def count(agg, event):
    if event["seq"] <= agg["seq"]:
        return agg
    return {"seq": event["seq"], "count": agg["count"] + 1}


sdf = app.dataframe(events)
sdf = sdf.tumbling_window(duration_ms=60_000).reduce(
    reducer=count, initializer=lambda event: {"seq": event["seq"], "count": 1}
).current()
sdf = sdf.apply(lambda w: {"start": w["start"], "count": w["value"]["count"]})
sdf.to_topic(out)

if __name__ == "__main__":
    app.run()
