"""MirrorMaker's checkpoints: a consumer group's committed offsets on the edge appear on the
hub for `<edge>.<topic>` (the same numbers, offsets are preserved), so a consumer moved from
the gateway to the datacenter continues exactly where it stopped — but a group that is
active on the hub keeps its own offsets."""

import time

from confluent_kafka import Consumer, TopicPartition

from mirror_site import caught_up, create_topic, mirror_pair, mirror_status, produce, wait_until, watermarks

RECORDS = 3000
PARTITIONS = 3


def consume(bootstrap: str, group: str, topic: str, want: int, commit: bool = True):
    """Consumes at least `want` records with a group (or all there are, if fewer), commits
    synchronously, and leaves; returns ({(partition, offset)}, consumer still open or None)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    c.subscribe([topic])
    seen = set()
    deadline = time.time() + 60
    idle = 0
    while len(seen) < want and time.time() < deadline and idle < 10:
        batch = c.consume(200, timeout=1)
        idle = idle + 1 if not batch and seen else 0
        for m in batch:
            if m.error() is None:
                seen.add((m.partition(), m.offset()))
    if commit and seen:
        c.commit(asynchronous=False)
    return seen, c


def committed(bootstrap: str, group: str, topic: str) -> dict:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        parts = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
        return {tp.partition: tp.offset for tp in parts if tp.offset >= 0}
    finally:
        c.close()


def test_a_consumer_group_moves_from_the_edge_to_the_hub_without_duplicates_or_gaps(tmp_path):
    with mirror_pair(tmp_path, extra="checkpoint_interval_ms = 300") as (certs, hub, edge):
        create_topic(edge.bootstrap, "sensors", PARTITIONS)
        produce(edge.bootstrap, "sensors", RECORDS)
        wait_until(lambda: caught_up(edge, hub, "gw-1", ["sensors"]), 60, "the hub to catch up")

        # Part of the topic is consumed on the gateway and committed there.
        on_edge, c = consume(edge.bootstrap, "analytics", "sensors", RECORDS // 2)  # spans partitions
        c.close()
        edge_offsets = committed(edge.bootstrap, "analytics", "sensors")
        assert edge_offsets and sum(edge_offsets.values()) == len(on_edge) < RECORDS
        wait_until(lambda: committed(hub.bootstrap, "analytics", "gw-1.sensors") == edge_offsets, 30,
                   "the group's offsets on the hub")

        # The consumer moves to the hub and continues at the same offsets.
        on_hub, c = consume(hub.bootstrap, "analytics", "gw-1.sensors", RECORDS - len(on_edge))
        c.close()
        assert not on_edge & on_hub, f"{len(on_edge & on_hub)} records consumed twice"
        everything = {(p, o) for p, (_, high) in watermarks(hub.bootstrap, "gw-1.sensors").items()
                      for o in range(high)}
        assert len(everything) == RECORDS
        assert on_edge | on_hub == everything, f"{len(everything - on_edge - on_hub)} records never consumed"
        status = mirror_status(hub)["hub"]["edges"]["gw-1"]
        assert status["checkpoints"] >= len(edge_offsets), status
        print(f"\ncheckpoints: {len(on_edge)} records consumed on the edge, {len(on_hub)} on the hub, "
              f"none twice, none missed; {status['checkpoints']} offsets checkpointed")


def test_a_group_active_on_the_hub_keeps_its_own_offsets(tmp_path):
    with mirror_pair(tmp_path, extra="checkpoint_interval_ms = 300") as (certs, hub, edge):
        create_topic(edge.bootstrap, "sensors", PARTITIONS)
        produce(edge.bootstrap, "sensors", RECORDS)
        wait_until(lambda: caught_up(edge, hub, "gw-1", ["sensors"]), 60, "the hub to catch up")

        # A dashboard at the datacenter reads a little and stays in its group.
        _, dashboard = consume(hub.bootstrap, "dashboard", "gw-1.sensors", 100)
        hub_offsets = committed(hub.bootstrap, "dashboard", "gw-1.sensors")
        # The group of the same name on the edge goes much further.
        _, c = consume(edge.bootstrap, "dashboard", "sensors", RECORDS)
        c.close()
        edge_offsets = committed(edge.bootstrap, "dashboard", "sensors")
        assert sum(edge_offsets.values()) == RECORDS
        time.sleep(3)  # ten checkpoint intervals
        assert committed(hub.bootstrap, "dashboard", "gw-1.sensors") == hub_offsets, \
            "a checkpoint overwrote the offsets of a group active on the hub"
        assert "has members on this hub" in edge.log_text()

        # Once the dashboard leaves, the edge's (further) offsets are carried over.
        dashboard.close()
        wait_until(lambda: committed(hub.bootstrap, "dashboard", "gw-1.sensors") == edge_offsets, 60,
                   "the edge's offsets once the hub's group is empty")


def test_a_consumer_group_moves_back_from_the_hub_to_the_edge(tmp_path):
    extra = "checkpoint_interval_ms = 300"
    with mirror_pair(tmp_path, extra=extra) as (certs, hub, edge):
        create_topic(edge.bootstrap, "sensors", PARTITIONS)
        produce(edge.bootstrap, "sensors", RECORDS)
        wait_until(lambda: caught_up(edge, hub, "gw-1", ["sensors"]), 60, "the hub to catch up")

        # A consumer reads part of the copy at the datacenter and commits there...
        on_hub, c = consume(hub.bootstrap, "reports", "gw-1.sensors", RECORDS // 2)
        c.close()
        hub_offsets = committed(hub.bootstrap, "reports", "gw-1.sensors")
        assert hub_offsets and sum(hub_offsets.values()) == len(on_hub)
        # ...its offsets come back to the edge for `sensors` (the hub checkpoints every 5 s)...
        wait_until(lambda: committed(edge.bootstrap, "reports", "sensors") == hub_offsets, 30,
                   "the group's offsets on the edge")
        # ...and it continues on the gateway without duplicates or gaps.
        on_edge, c = consume(edge.bootstrap, "reports", "sensors", RECORDS - len(on_hub))
        c.close()
        assert not on_edge & on_hub, f"{len(on_edge & on_hub)} records consumed twice"
        assert len(on_edge) + len(on_hub) == RECORDS
        assert mirror_status(edge)["edge"]["checkpoints_from_hub"] >= len(hub_offsets)
