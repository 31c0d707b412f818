"""A faust-streaming app: counts door events per lock in a table (changelog topic
`door-counter-door-counts-changelog`, compacted). Each event carries a per-lock sequence
number, and the table keeps the last one it counted, so that events redelivered after a
crash (at-least-once) are not counted twice.

    python faust_door_counts.py <bootstrap> <data dir>
"""

import sys

import faust

bootstrap, datadir = sys.argv[1], sys.argv[2]

app = faust.App(
    "door-counter",
    broker=f"kafka://{bootstrap}",
    store="memory://",  # no local state: a restart rebuilds the table from the changelog
    datadir=datadir,
    topic_partitions=1,
    topic_replication_factor=1,
    web_enabled=False,
    broker_commit_every=50,
    broker_commit_interval=0.5,
    # A killed worker's membership ends after this; the restarted one waits for it.
    broker_session_timeout=6.0,
    broker_heartbeat_interval=1.0,
)

events = app.topic("door-events", key_type=str, value_type=bytes, value_serializer="json")
counts = app.Table("door-counts", default=dict, partitions=1)


@app.agent(events)
async def count(stream):
    async for lock, event in stream.items():
        state = counts[lock] or {"seq": -1, "count": 0}
        if event["seq"] > state["seq"]:
            counts[lock] = {"seq": event["seq"], "count": state["count"] + 1}


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "--loglevel", "info"]
    app.main()
