"""Mirroring over QUIC with real tern processes: an edge's topics reach the hub as
`<edge>.<topic>` with the same offsets, keys, values, headers and timestamps, compared record
by record through the Kafka protocol on both sides; through hub outages, new topics and
partitions, retention gaps, and with identities the hub must refuse."""

import os
import re
import subprocess
import time

from confluent_kafka import Producer

from harness import TERN_BIN, Tern
from mirror_site import (Certs, add_partitions, assert_identical, caught_up, create_topic, edge_config,
                         mirror_pair, mirror_status, produce, read_all, start_edge, start_hub, status_text,
                         wait_until, watermarks)

RECORDS = int(os.environ.get("MIRROR_RECORDS", "500000"))
OUTAGE_S = float(os.environ.get("MIRROR_OUTAGE_S", "60"))

# topic -> (partitions, producer compression, headers)
TOPICS = {
    "sensors": (3, "lz4", True),
    "doors": (1, "gzip", True),
    "cameras": (2, "zstd", True),
    "plain": (1, "none", False),
}


def make_topics(edge: Tern):
    for topic, (partitions, _, _) in TOPICS.items():
        create_topic(edge.bootstrap, topic, partitions)


def produce_all(edge: Tern, per_topic: int, start: int = 0):
    for topic, (_, codec, headers) in TOPICS.items():
        produce(edge.bootstrap, topic, per_topic, codec=codec, start=start, headers=headers)


def test_edge_topics_reach_the_hub_with_the_same_offsets_and_records(tmp_path):
    with mirror_pair(tmp_path) as (certs, hub, edge):
        make_topics(edge)
        produce_all(edge, RECORDS // len(TOPICS))
        wait_until(lambda: caught_up(edge, hub, "gw-1", list(TOPICS)), 300, "the hub to catch up")
        total = assert_identical(edge, hub, "gw-1", list(TOPICS))
        assert total == RECORDS // len(TOPICS) * len(TOPICS)
        # Partitions of one topic opened at once must not trip over its creation.
        assert "mirror stream refused" not in hub.log_text(), hub.log_text()[-3000:]

        status = mirror_status(edge)["edge"]
        assert status["state"] == "connected", status
        assert all(p["records_behind"] == 0 for p in status["partitions"].values()), status
        wait_until(lambda: all(p["bytes_behind"] == 0 for p in mirror_status(edge)["edge"]["partitions"].values()),
                   10, "bytes behind to reach 0")
        hub_status = mirror_status(hub)["hub"]
        assert hub_status["edges"]["gw-1"]["connected"], hub_status
        mirrored = [k for k in hub_status["edges"]["gw-1"]["partitions"] if not k.startswith("gw-1.heartbeats/")]
        assert len(mirrored) == sum(p for p, _, _ in TOPICS.values()), hub_status

        text = status_text(hub)
        assert "edge gw-1: connected" in text and "gw-1.sensors" in text, text
        metrics = hub.metrics()
        received = sum(float(l.split()[-1]) for l in metrics.splitlines()
                       if l.startswith("tern_mirror_received_records_total{") and "heartbeats" not in l)
        assert received == total, f"hub counted {received} mirrored records, expected {total}"


def test_a_hub_outage_loses_and_duplicates_nothing(tmp_path):
    with mirror_pair(tmp_path) as (certs, hub, edge):
        make_topics(edge)
        produce_all(edge, 5_000)
        wait_until(lambda: caught_up(edge, hub, "gw-1", list(TOPICS)), 120, "the first catch-up")
        hub.stop()
        # The edge keeps taking records while the hub is away.
        deadline = time.time() + OUTAGE_S
        round = 1
        while time.time() < deadline:
            produce_all(edge, 2_000, start=round * 10_000)
            round += 1
            time.sleep(min(5.0, max(0.0, deadline - time.time())))
        status = mirror_status(edge)["edge"]
        assert status["state"] != "connected", status
        assert sum(p["records_behind"] for p in status["partitions"].values()) > 0, status
        assert sum(p["bytes_behind"] for p in status["partitions"].values()) > 0, status
        hub.start()
        wait_until(lambda: caught_up(edge, hub, "gw-1", list(TOPICS)), 180, "the catch-up after the outage")
        total = assert_identical(edge, hub, "gw-1", list(TOPICS))
        assert total == 5_000 * len(TOPICS) + 2_000 * len(TOPICS) * (round - 1)
        assert mirror_status(edge)["edge"]["reconnects"] >= 1


def test_new_topics_and_partitions_on_the_edge_appear_on_the_hub(tmp_path):
    with mirror_pair(tmp_path) as (certs, hub, edge):
        create_topic(edge.bootstrap, "locks", 1, {"retention.ms": "604800000"})
        produce(edge.bootstrap, "locks", 1_000)
        wait_until(lambda: caught_up(edge, hub, "gw-1", ["locks"]), 60, "locks on the hub")
        # A new partition and a new topic while mirroring runs.
        add_partitions(edge.bootstrap, "locks", 3)
        create_topic(edge.bootstrap, "alarms", 2)
        produce(edge.bootstrap, "locks", 3_000, start=1_000)
        produce(edge.bootstrap, "alarms", 2_000)
        wait_until(lambda: caught_up(edge, hub, "gw-1", ["locks", "alarms"]), 60, "new partitions and topics")
        assert set(watermarks(hub.bootstrap, "gw-1.locks")) == {0, 1, 2}
        assert_identical(edge, hub, "gw-1", ["locks", "alarms"])
        # The hub's topic has the edge topic's configs.
        described = subprocess.run([TERN_BIN, "topics", "-b", hub.bootstrap, "describe", "gw-1.locks"],
                                   capture_output=True, text=True, timeout=30).stdout
        assert ",retention.ms=604800000" in described.replace(" ", ""), described
        # Internal topics never travel.
        assert not watermarks(hub.bootstrap, "gw-1.__consumer_offsets")
        # Config changes on the edge follow (MirrorMaker's config sync), except the
        # excluded ones (message.timestamp.type keeps the hub's own value).
        subprocess.run([TERN_BIN, "topics", "-b", edge.bootstrap, "alter", "locks",
                        "--config", "retention.ms=86400000", "--config", "message.timestamp.type=LogAppendTime"],
                       check=True, capture_output=True, timeout=30)

        def hub_configs():
            return subprocess.run([TERN_BIN, "topics", "-b", hub.bootstrap, "describe", "gw-1.locks"],
                                  capture_output=True, text=True, timeout=30).stdout.replace(" ", "")
        wait_until(lambda: ",retention.ms=86400000" in hub_configs(), 30, "the config change on the hub")
        assert "message.timestamp.type=LogAppendTime" not in hub_configs(), hub_configs()
        produce(edge.bootstrap, "locks", 500, start=4_000)
        wait_until(lambda: caught_up(edge, hub, "gw-1", ["locks"]), 60, "records after the config change")
        # LogAppendTime on the edge stamps the edge's clock; the hub keeps those timestamps.
        assert_identical(edge, hub, "gw-1", ["locks"])
        # A config removed on the edge is removed on the hub.
        subprocess.run([TERN_BIN, "topics", "-b", edge.bootstrap, "alter", "locks", "--delete-config", "retention.ms"],
                       check=True, capture_output=True, timeout=30)
        wait_until(lambda: ",retention.ms=86400000" not in hub_configs(), 30, "the removal on the hub")


def test_retention_on_the_edge_while_the_hub_is_down_is_recorded_as_a_gap(tmp_path):
    retention = """
[topic_defaults]
"retention.bytes" = 20000
"segment.bytes" = 10000
[storage]
retention_check_interval_ms = 200
"""
    with mirror_pair(tmp_path, extra=retention) as (certs, hub, edge):
        create_topic(edge.bootstrap, "events", 1)
        produce(edge.bootstrap, "events", 100, codec="none")
        wait_until(lambda: caught_up(edge, hub, "gw-1", ["events"]), 60, "the first records")
        hub.stop()
        # Separate flushes make separate batches, so segments roll and retention can delete.
        for round in range(20):
            produce(edge.bootstrap, "events", 250, codec="none", start=100 + round * 250)
        low = wait_until(lambda: watermarks(edge.bootstrap, "events")[0][0] > 100 and
                         watermarks(edge.bootstrap, "events")[0][0], 30, "edge retention to delete")
        hub.start()
        wait_until(lambda: caught_up(edge, hub, "gw-1", ["events"]), 60, "the catch-up after the gap")
        # The hub kept what it had, jumped the lost range, and has the rest at the same offsets.
        mine = watermarks(edge.bootstrap, "events")[0]
        theirs = watermarks(hub.bootstrap, "gw-1.events")[0]
        assert theirs == (0, mine[1]), (mine, theirs)
        hub_edge = mirror_status(hub)["hub"]["edges"]["gw-1"]["partitions"]["gw-1.events/0"]
        assert len(hub_edge["gaps"]) == 1, hub_edge
        gap_from, gap_to = hub_edge["gaps"][0]
        assert gap_from == 100 and gap_to >= low, (hub_edge, low)
        assert hub_edge["gap_records"] == gap_to - gap_from
        edge_part = mirror_status(edge)["edge"]["partitions"]["events/0"]
        assert edge_part["gap_records"] == gap_to - gap_from, edge_part
        gap_metric = [l for l in hub.metrics().splitlines() if l.startswith("tern_mirror_gap_records_total{")]
        assert gap_metric and float(gap_metric[0].split()[-1]) == gap_to - gap_from, gap_metric
        assert re.search(r"mirror gap.*from=100", hub.log_text()), "the hub logs the gap"
        # The gap is remembered across a hub restart.
        hub.restart()
        again = mirror_status(hub)["hub"]["edges"]["gw-1"]["partitions"]["gw-1.events/0"]
        assert again["gaps"] == [[gap_from, gap_to]], again


def produce_sized(bootstrap: str, topic: str, count: int, timestamp_ms: int):
    """`count` incompressible 1000-byte records, one batch each, all with `timestamp_ms`."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "compression.type": "none",
                  "linger.ms": 0, "batch.num.messages": 1})
    for i in range(count):
        p.produce(topic, value=os.urandom(1000), timestamp=timestamp_ms)
        p.poll(0)
    assert p.flush(30) == 0


def test_a_tiny_disk_budget_deletes_what_the_hub_has_before_what_it_has_not(tmp_path):
    budget = 400_000
    config = f"""
[storage]
max_bytes = {budget}
retention_check_interval_ms = 200
[topic_defaults]
"segment.bytes" = 16384
"compression.type" = "producer"
"""
    with mirror_pair(tmp_path, extra=config) as (certs, hub, edge):
        now = int(time.time() * 1000)
        # New records the hub has...
        produce_sized(edge.bootstrap, "sensors", 150, now)
        wait_until(lambda: caught_up(edge, hub, "gw-1", ["sensors"]), 60, "sensors on the hub")
        hub.stop()
        # ...and older ones it has not (an hour old, from a device's clock).
        produce_sized(edge.bootstrap, "doors", 300, now - 3_600_000)
        wait_until(lambda: watermarks(edge.bootstrap, "sensors")[0][0] > 0, 30,
                   "the budget to delete mirrored sensors segments")
        time.sleep(1)  # a few more retention passes
        assert watermarks(edge.bootstrap, "doors")[0][0] == 0, \
            "unmirrored (though older) doors segments were deleted while mirrored ones remained"
        doors = mirror_status(edge)["edge"]["partitions"]["doors/0"]
        assert doors["deleted_unmirrored"] == 0, doors
        files = sorted(p.name for p in (edge.data_dir / "topics" / "doors" / "0").glob("*.log"))
        assert files and files[0].startswith("00000000000000000000"), files

        # Past what deleting mirrored data can free, unmirrored data goes — counted, logged,
        # shown, and recorded as a gap by the hub once it is back.
        produce_sized(edge.bootstrap, "doors", 400, now - 3_000_000)
        low = wait_until(lambda: watermarks(edge.bootstrap, "doors")[0][0], 30, "doors deletions")
        time.sleep(1)
        deleted = mirror_status(edge)["edge"]["partitions"]["doors/0"]["deleted_unmirrored"]
        low = watermarks(edge.bootstrap, "doors")[0][0]
        assert deleted == low > 0, (deleted, low)
        metric = [l for l in edge.metrics().splitlines()
                  if l.startswith('tern_mirror_deleted_unmirrored_records_total{topic="doors"}')]
        assert metric and float(metric[0].split()[-1]) == deleted, metric
        assert "deleted records the mirror hub does not have yet" in edge.log_text()
        hub.start()
        wait_until(lambda: caught_up(edge, hub, "gw-1", ["doors"]), 60, "doors on the hub")
        gap = mirror_status(hub)["hub"]["edges"]["gw-1"]["partitions"]["gw-1.doors/0"]
        assert gap["gap_records"] == deleted, (gap, deleted)
        print(f"\nbudget {budget} B: mirrored segments went first; then {deleted} unmirrored records "
              f"deleted, counted on the edge and recorded as a gap on the hub")


def test_heartbeats_show_liveness_and_latency_on_the_hub(tmp_path):
    # Heartbeats travel even when the user's topic selection would exclude them.
    extra = 'heartbeat_interval_ms = 200\ntopics_exclude = [".*"]'
    with mirror_pair(tmp_path, extra=extra) as (certs, hub, edge):
        wait_until(lambda: sum(h for _, h in watermarks(hub.bootstrap, "gw-1.heartbeats").values()) >= 5, 30,
                   "heartbeats on the hub")
        records = read_all(hub.bootstrap, "gw-1.heartbeats")[0]
        assert all(r[1] == b"gw-1" and b'"edge":"gw-1"' in r[2] for r in records), records[:3]
        hub_edge = mirror_status(hub)["hub"]["edges"]["gw-1"]
        assert hub_edge["last_heartbeat_ms"] and hub_edge["heartbeat_latency_ms"] is not None, hub_edge
        assert any(l.startswith('tern_mirror_heartbeat_timestamp_seconds{edge="gw-1"}')
                   for l in hub.metrics().splitlines())
        # The edge stops: so do its heartbeats, and the hub says the edge is gone.
        edge.stop()
        wait_until(lambda: not mirror_status(hub)["hub"]["edges"]["gw-1"]["connected"], 90, "the hub to notice")
        before = watermarks(hub.bootstrap, "gw-1.heartbeats")[0]
        last = mirror_status(hub)["hub"]["edges"]["gw-1"]["last_heartbeat_ms"]
        time.sleep(1.5)
        assert watermarks(hub.bootstrap, "gw-1.heartbeats")[0] == before
        assert mirror_status(hub)["hub"]["edges"]["gw-1"]["last_heartbeat_ms"] == last
        text = status_text(hub)
        assert "edge gw-1: disconnected" in text and "last heartbeat" in text, text


def test_two_edges_share_a_hub_and_wrong_identities_are_refused(tmp_path):
    certs = Certs(tmp_path / "certs")
    other_ca = Certs(tmp_path / "other-ca")
    hub = start_hub(tmp_path, certs)
    one = start_edge(tmp_path, certs, "gw-1", hub.quic_port)
    two = start_edge(tmp_path, certs, "gw-2", hub.quic_port)
    # gw-3 pretends to be gw-1 (its certificate says gw-3); gw-4's certificate is from another CA.
    impostor = Tern(tmp_path / "impostor", name="impostor",
                    config=edge_config(certs, "gw-1", hub.quic_port, cert_name="gw-3")).start()
    stranger = Tern(tmp_path / "stranger", name="stranger",
                    config=edge_config(other_ca, "gw-4", hub.quic_port, ca=certs.dir / "ca.pem")).start()
    try:
        for edge in (one, two, impostor, stranger):
            create_topic(edge.bootstrap, "sensors", 1)
        produce(one.bootstrap, "sensors", 1_000)
        produce(two.bootstrap, "sensors", 2_000)
        produce(impostor.bootstrap, "sensors", 50)
        produce(stranger.bootstrap, "sensors", 60)
        wait_until(lambda: caught_up(one, hub, "gw-1", ["sensors"]) and caught_up(two, hub, "gw-2", ["sensors"]),
                   60, "both edges")
        assert_identical(one, hub, "gw-1", ["sensors"])
        assert_identical(two, hub, "gw-2", ["sensors"])
        wait_until(lambda: "not valid for the edge name `gw-1`" in hub.log_text(), 30, "the hub's refusal log")
        wait_until(lambda: "the hub refused this edge" in impostor.log_text(), 30, "the impostor's log")
        wait_until(lambda: "edge connection failed during the handshake" in hub.log_text(), 30,
                   "the hub's handshake-failure log")
        wait_until(lambda: "cannot connect to the mirror hub" in stranger.log_text(), 30, "the stranger's log")
        assert not watermarks(hub.bootstrap, "gw-3.sensors") and not watermarks(hub.bootstrap, "gw-4.sensors")
        # gw-1's copy holds gw-1's 1,000 records only: the impostor wrote nothing into it.
        assert watermarks(hub.bootstrap, "gw-1.sensors")[0] == (0, 1_000)
        assert mirror_status(impostor)["edge"]["state"] != "connected"
        # At the hub, Kafka producers cannot write into an edge's namespace either.
        from confluent_kafka import Producer
        errors = []
        p = Producer({"bootstrap.servers": hub.bootstrap, "message.timeout.ms": 10_000})
        p.produce("gw-1.sensors", value=b"forged", on_delivery=lambda err, msg: errors.append(err))
        p.flush(15)
        assert errors and errors[0] is not None and "AUTHORIZATION" in str(errors[0]), errors
        assert watermarks(hub.bootstrap, "gw-1.sensors")[0] == (0, 1_000)
    finally:
        for t in (one, two, impostor, stranger, hub):
            t.kill()


def test_an_edge_cannot_fill_the_hub_with_topics(tmp_path):
    certs = Certs(tmp_path / "certs")
    hub = start_hub(tmp_path, certs, extra="max_topics_per_edge = 3\nmax_partitions_per_topic = 4")
    edge = start_edge(tmp_path, certs, "gw-1", hub.quic_port)
    try:
        for name in ("t1", "t2", "t3", "t4"):
            create_topic(edge.bootstrap, name, 1)
        create_topic(edge.bootstrap, "wide", 8)
        for name in ("t1", "t2", "t3", "t4", "wide"):
            produce(edge.bootstrap, name, 10)

        def refusals():
            parts = mirror_status(edge)["edge"]["partitions"]
            return [p for p in parts.values() if "hub.max_" in (p.get("last_error") or "")]
        refused = wait_until(lambda: len(refusals()) >= 2 + 8 and refusals(), 60, "the hub's refusals")
        mirrored = {t for t in watermarks_all(hub) if t.startswith("gw-1.")}
        assert len(mirrored) == 3, mirrored
        assert "gw-1.wide" not in mirrored
        assert any("max_partitions_per_topic" in p["last_error"] for p in refused if p["topic"] == "wide")
        assert re.search(r"mirror stream refused.*max_topics_per_edge", hub.log_text())
    finally:
        edge.kill()
        hub.kill()


def watermarks_all(tern: Tern) -> set:
    from confluent_kafka.admin import AdminClient
    return set(AdminClient({"bootstrap.servers": tern.bootstrap}).list_topics(timeout=10).topics)
