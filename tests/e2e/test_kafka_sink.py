"""The Kafka sink with real tern processes: edge → hub (QUIC mirroring) → an external
cluster, where the cluster is a third tern reached only through its Kafka listener. Every
record arrives once, in per-partition order, byte-exact (offsets, keys, values, headers,
timestamps), across a kill -9 of the hub, a restart of the cluster and a cluster outage;
and what the cluster refuses is said clearly while the rest keeps flowing.

SINK_RECORDS sets the total (200,000 by default), SINK_OUTAGE_S the outage (30 s)."""

import json
import os
import subprocess
import threading
import time
import urllib.request

from harness import TERN_BIN, Tern, free_port
from mirror_site import (Certs, caught_up, create_topic, mirror_status, produce, read_all, start_edge, start_hub,
                         wait_until, watermarks)

RECORDS = int(os.environ.get("SINK_RECORDS", "200000"))
OUTAGE_S = float(os.environ.get("SINK_OUTAGE_S", "30"))

# topic -> (partitions, producer compression, headers)
TOPICS = {
    "sensors": (3, "lz4", True),
    "doors": (1, "gzip", True),
    "cameras": (2, "zstd", True),
    "plain": (1, "none", False),
}


def sink_config(cluster: Tern, extra: str = "") -> str:
    return f"""
[[sinks.kafka]]
name = "dc"
bootstrap_servers = ["{cluster.bootstrap}"]
retry_backoff_max_ms = 1000
discovery_interval_ms = 500
{extra}
"""


def sink_status(tern: Tern) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{tern.http_port}/v1/sinks", timeout=10) as r:
        return json.loads(r.read())


def same_ends(a: Tern, a_topic: str, b: Tern, b_topic: str) -> bool:
    mine = watermarks(a.bootstrap, a_topic)
    theirs = watermarks(b.bootstrap, b_topic)
    return bool(mine) and {p: h for p, (_, h) in mine.items()} == {p: h for p, (_, h) in theirs.items()}


def assert_same_records(a: Tern, a_topic: str, b: Tern, b_topic: str) -> int:
    """Record by record, offsets included: the cluster's copy equals the local topic."""
    mine, theirs = read_all(a.bootstrap, a_topic), read_all(b.bootstrap, b_topic)
    assert sorted(mine) == sorted(theirs), f"{a_topic}: partitions {sorted(mine)} vs {sorted(theirs)}"
    total = 0
    for p in mine:
        x, y = mine[p], theirs[p]
        assert len(x) == len(y), f"{a_topic}-{p}: {len(x)} records here, {len(y)} in the cluster"
        for r, s in zip(x, y):
            assert r == s, f"{a_topic}-{p} differs at offset {r[0]}: {r!r} vs {s!r}"
        total += len(x)
    return total


def test_edge_to_hub_to_cluster_exactly_once_across_crashes_and_an_outage(tmp_path):
    cluster = Tern(tmp_path / "cluster", name="cluster").start()
    certs = Certs(tmp_path / "certs")
    hub = start_hub(tmp_path, certs, extra=sink_config(cluster))
    edge = start_edge(tmp_path, certs, "gw-1", hub.quic_port)
    try:
        for topic, (partitions, _, _) in TOPICS.items():
            create_topic(edge.bootstrap, topic, partitions)
        per_topic = RECORDS // len(TOPICS)
        quarter = per_topic // 4

        def load(start: int, count: int):
            for topic, (_, codec, headers) in TOPICS.items():
                produce(edge.bootstrap, topic, count, codec=codec, start=start, headers=headers)

        def all_arrived() -> bool:
            return caught_up(edge, hub, "gw-1", list(TOPICS)) and all(
                same_ends(hub, f"gw-1.{t}", cluster, f"gw-1.{t}") for t in TOPICS)

        load(0, quarter)
        wait_until(all_arrived, 180, "the first quarter in the cluster")

        # kill -9 of the hub while records flow through it.
        producer = threading.Thread(target=load, args=(quarter, quarter))
        producer.start()
        time.sleep(1.5)
        hub.kill()
        time.sleep(0.5)
        hub.start()
        producer.join()

        # The cluster restarts while records flow into it.
        producer = threading.Thread(target=load, args=(2 * quarter, quarter))
        producer.start()
        time.sleep(1.0)
        cluster.stop()
        cluster.start()
        producer.join()

        # The cluster is away for a while; records wait on the hub.
        wait_until(all_arrived, 180, "the catch-up after the cluster's restart")
        cluster.stop()
        deadline = time.time() + OUTAGE_S
        load(3 * quarter, per_topic - 3 * quarter)
        wait_until(lambda: caught_up(edge, hub, "gw-1", list(TOPICS)), 120, "the hub during the outage")
        status = sink_status(hub)["sinks"][0]
        assert sum(p["lag_records"] for p in status["partitions"]) > 0, status
        time.sleep(max(0.0, deadline - time.time()))
        assert sink_status(hub)["sinks"][0]["last_error"], "the outage is not shown in /v1/sinks"
        cluster.start()
        wait_until(all_arrived, 300, "the catch-up after the outage")

        total = 0
        for topic in TOPICS:
            total += assert_same_records(hub, f"gw-1.{topic}", cluster, f"gw-1.{topic}")
        assert total == per_topic * len(TOPICS), total

        status = sink_status(hub)["sinks"][0]
        assert status["connected"], status
        wait_until(lambda: all(p["lag_records"] == 0 for p in sink_status(hub)["sinks"][0]["partitions"]),
                   10, "the sink's lag to reach 0")
        assert {p["topic"] for p in status["partitions"]} == {f"gw-1.{t}" for t in TOPICS} | {"gw-1.heartbeats"}

        # The cursors are committed offsets of tern-sink-dc, visible to Kafka tools.
        described = subprocess.run([TERN_BIN, "groups", "describe", "tern-sink-dc", "--bootstrap-server",
                                    hub.bootstrap], capture_output=True, text=True, timeout=30)
        assert described.returncode == 0, described.stderr
        assert "gw-1.sensors" in described.stdout, described.stdout

        # The hub's offsets are the cluster's: offset syncs say so (delta 0 everywhere).
        syncs = read_all(cluster.bootstrap, "tern-offset-syncs")[0]
        assert syncs, "no offset-sync records in the cluster"
        for _, key, value, _, _ in syncs:
            sync = json.loads(value)
            assert key.decode() == f"{sync['source_topic']}:{sync['source_partition']}"
            assert sync["source_offset"] == sync["target_offset"], sync

        metrics = hub.metrics()
        assert 'tern_sink_lag_records{sink="dc",topic="gw-1.sensors",partition="0"} 0' in metrics, \
            [l for l in metrics.splitlines() if l.startswith("tern_sink_lag")][:5]
        assert "tern_sink_records_total" in metrics
        text = hub.log_text()
        assert "Kafka sink has a producer id" in text
    finally:
        edge.kill()
        hub.kill()
        cluster.kill()


def test_what_the_cluster_refuses_is_said_and_the_rest_flows(tmp_path):
    """A batch larger than the cluster accepts holds only its own partition, with a log
    line that says what to change; a topic missing in a cluster where the sink may not
    create topics waits until someone creates it; a dead cluster at start is retried."""
    cluster = Tern(tmp_path / "cluster", name="cluster")  # not started yet
    source = Tern(tmp_path / "source", name="source",
                  config=sink_config(cluster, 'topics = ["big", "small", "later"]\ncreate_topics = false')).start()
    try:
        create_topic(source.bootstrap, "small", 1)
        create_topic(source.bootstrap, "big", 1)
        create_topic(source.bootstrap, "later", 1)
        produce(source.bootstrap, "small", 500, codec="none")
        produce(source.bootstrap, "later", 200, codec="none")
        # Incompressible 200 kB values: larger than the cluster's max.message.bytes below.
        from confluent_kafka import Producer
        p = Producer({"bootstrap.servers": source.bootstrap, "acks": "all", "compression.type": "none",
                      "message.max.bytes": 1_000_000})
        for i in range(3):
            p.produce("big", key=b"k", value=os.urandom(200_000))
        assert p.flush(30) == 0
        time.sleep(2)
        assert "cluster is unreachable" in source.log_text(), source.log_text()[-2000:]

        cluster.start()
        create_topic(cluster.bootstrap, "small", 1)
        create_topic(cluster.bootstrap, "big", 1, {"max.message.bytes": "100000"})
        wait_until(lambda: same_ends(source, "small", cluster, "small"), 60, "small in the cluster")
        assert assert_same_records(source, "small", cluster, "small") == 500
        wait_until(lambda: "refuses a batch" in source.log_text(), 30, "the too-large batch to be logged")
        assert "raise max.message.bytes of big" in source.log_text()
        assert watermarks(cluster.bootstrap, "big")[0][1] == 0
        status = {p["topic"]: p for p in sink_status(source)["sinks"][0]["partitions"]}
        assert "too large" in (status["big"]["waiting"] or ""), status
        assert "does not exist in the cluster" in (status["later"]["waiting"] or ""), status
        assert "topic later does not exist in the cluster" in source.log_text()

        # Someone creates the topic: it flows.
        create_topic(cluster.bootstrap, "later", 1)
        wait_until(lambda: same_ends(source, "later", cluster, "later"), 60, "later in the cluster")
        assert assert_same_records(source, "later", cluster, "later") == 200
    finally:
        source.kill()
        cluster.kill()


def test_pass_through_hub_acknowledges_only_what_the_cluster_has_and_keeps_a_short_buffer(tmp_path):
    """`pass_through = true`: the hub is a QUIC terminator in front of the cluster. While
    the cluster is away, the edge hears no acknowledgement (it keeps its records); the
    hub deletes sealed segments as soon as the cluster has them."""
    cluster = Tern(tmp_path / "cluster", name="cluster").start()
    certs = Certs(tmp_path / "certs")
    hub = start_hub(tmp_path, certs, extra=sink_config(cluster, "pass_through = true")
                    + '[topic_defaults]\n"segment.bytes" = 16384\n')
    edge = start_edge(tmp_path, certs, "gw-1", hub.quic_port)
    try:
        create_topic(edge.bootstrap, "sensors", 2)
        produce(edge.bootstrap, "sensors", 20_000, codec="none")

        def behind() -> int:
            return sum(p["records_behind"] for k, p in mirror_status(edge)["edge"]["partitions"].items()
                       if k.startswith("sensors/"))

        wait_until(lambda: same_ends(edge, "sensors", cluster, "gw-1.sensors"), 120, "sensors in the cluster")
        wait_until(lambda: behind() == 0, 30, "the edge to hear every acknowledgement")

        cluster.stop()
        produce(edge.bootstrap, "sensors", 5_000, codec="none", start=20_000)
        time.sleep(3)
        held = behind()
        assert held == 5_000, f"the edge should still wait for 5,000 records, waits for {held}"
        cluster.start()
        wait_until(lambda: behind() == 0, 120, "the acknowledgements once the cluster is back")
        wait_until(lambda: same_ends(edge, "sensors", cluster, "gw-1.sensors"), 60, "everything in the cluster")
        assert assert_same_records(edge, "sensors", cluster, "gw-1.sensors") == 25_000
        # The hub's short buffer: sealed segments the cluster has are gone from its disk
        # (the active segment stays, as in Kafka).
        wait_until(lambda: all(low > 0 for low, _ in watermarks(hub.bootstrap, "gw-1.sensors").values()),
                   30, "the hub to delete forwarded segments")
    finally:
        edge.kill()
        hub.kill()
        cluster.kill()


def test_sasl_scram_over_tls_to_the_cluster_and_a_login_that_starts_working(tmp_path):
    """The cluster (a tern) listens with SASL_SSL: the sink connects over TLS (checking the
    cluster's certificate against the CA) and logs in with SCRAM-SHA-512. Until the
    cluster knows the sink's user, the sink says that authentication fails and records
    wait; once the user is added (no restart anywhere), they flow."""
    certs_dir = tmp_path / "certs"
    for args in (["ca"], ["hub", "--name", "127.0.0.1"]):
        done = subprocess.run([TERN_BIN, "certs", *args, "--dir", str(certs_dir)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    secure_port, lan_port = free_port(), free_port()
    cluster = Tern(tmp_path / "cluster", name="cluster", config=f"""
[[kafka.listeners]]
name = "SECURE"
listen = "127.0.0.1:{secure_port}"
security_protocol = "SASL_SSL"
cert = "{certs_dir / 'hub.pem'}"
key = "{certs_dir / 'hub.key'}"

[[kafka.listeners]]
name = "LAN"
listen = "127.0.0.1:{lan_port}"
security_protocol = "SASL_PLAINTEXT"
""").start()
    source = Tern(tmp_path / "source", name="source", config=f"""
[[sinks.kafka]]
name = "dc"
bootstrap_servers = ["127.0.0.1:{secure_port}"]
security_protocol = "SASL_SSL"
sasl_mechanism = "SCRAM-SHA-512"
sasl_username = "edge-sink"
sasl_password = "Sink-pa55"
ssl_ca_file = "{certs_dir / 'ca.pem'}"
topics = ["sensors"]
retry_backoff_max_ms = 500
discovery_interval_ms = 300

# A second sink into the same cluster with SASL/PLAIN over its plaintext listener.
[[sinks.kafka]]
name = "lan"
bootstrap_servers = ["127.0.0.1:{lan_port}"]
security_protocol = "SASL_PLAINTEXT"
sasl_mechanism = "PLAIN"
sasl_username = "edge-sink"
sasl_password = "Sink-pa55"
topics = ["sensors"]
target_topic = "plain.{{topic}}"
offset_syncs_topic = ""
retry_backoff_max_ms = 500
discovery_interval_ms = 300
""").start()
    try:
        create_topic(source.bootstrap, "sensors", 2)
        produce(source.bootstrap, "sensors", 5_000, codec="lz4")
        wait_until(lambda: 'SASL authentication as "edge-sink" failed' in source.log_text(), 30,
                   "the sink to report the refused login")
        assert "invalid username or password" in source.log_text()
        assert "Sink-pa55" not in source.log_text() and "Sink-pa55" not in cluster.log_text()
        status = sink_status(source)["sinks"][0]
        assert "SASL authentication" in (status["last_error"] or ""), status
        done = subprocess.run([TERN_BIN, "users", "add", "edge-sink", "--data-dir", str(cluster.data_dir)],
                              input="Sink-pa55\n", capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        # The cluster's plaintext listener is for local tools; the sink came in over TLS.
        wait_until(lambda: same_ends(source, "sensors", cluster, "sensors"), 60, "sensors in the cluster")
        assert assert_same_records(source, "sensors", cluster, "sensors") == 5_000
        wait_until(lambda: same_ends(source, "sensors", cluster, "plain.sensors"), 60, "plain.sensors")
        assert assert_same_records(source, "sensors", cluster, "plain.sensors") == 5_000
    finally:
        source.kill()
        cluster.kill()
