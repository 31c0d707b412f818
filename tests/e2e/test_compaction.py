"""Log compaction (cleanup.policy=compact) as Kafka clients see it: the latest value of
every key survives at its original offset, superseded records and old tombstones go,
librdkafka and kcat read the gaps correctly (from the beginning, from a committed offset
that fell into a gap, and to the end with -e), keyless records are refused, a crash at
any step of a cleaning loses no key, and a million updates of a thousand keys shrink to
about a thousand records."""

import re
import subprocess
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition, OFFSET_BEGINNING
from confluent_kafka.admin import AdminClient, NewTopic

from clients import consume_to_end
from harness import TERN_BIN

# Cleaner and idle-segment checks every 200 ms, no disk-rate limit.
FAST = """
[storage]
retention_check_interval_ms = 200
cleaner_interval_ms = 200
cleaner_io_max_bytes_per_second = 0
"""

# Compacted, rolled after 500 ms idle (so the last records become cleanable), cleaned as
# soon as anything is dirty.
COMPACTED = {
    "cleanup.policy": "compact",
    "segment.ms": "500",
    "segment.bytes": "65536",
    "min.cleanable.dirty.ratio": "0.01",
}


def create(bootstrap, name, configs):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1, config=configs)])[name].result(30)


def produce(bootstrap, topic, records, linger_ms=5):
    """records: (key, value-or-None). Returns the offset each got."""
    offsets = []
    errors = []

    def report(err, msg):
        if err:
            errors.append(err)
        else:
            offsets.append(msg.offset())

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": linger_ms,
                  "enable.idempotence": True})
    for key, value in records:
        p.produce(topic, key=key, value=value, on_delivery=report)
        p.poll(0)
    assert p.flush(60) == 0
    assert not errors, errors
    return offsets


def read_all(bootstrap, topic, start=OFFSET_BEGINNING, group="compaction-reader"):
    """Every record from `start` to the end, as librdkafka delivers them: [(offset, key, value)]."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.partition.eof": True,
                  "enable.auto.commit": False, "auto.offset.reset": "error"})
    c.assign([TopicPartition(topic, 0, start)])
    try:
        return [(m.offset(), m.key(), m.value()) for m in consume_to_end(c)]
    finally:
        c.close()


def metric(tern, name, topic):
    for line in tern.metrics().splitlines():
        if line.startswith(name + "{") and f'topic="{topic}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def latest(records):
    """key -> (offset, value): the last record of every key."""
    out = {}
    for offset, key, value in records:
        out[key] = (offset, value)
    return out


def test_librdkafka_and_kcat_read_a_compacted_topic(tern_factory):
    tern = tern_factory(config=FAST)
    create(tern.bootstrap, "door-state", COMPACTED)
    written = []
    for rnd in range(20):
        batch = [(f"lock-{k}".encode(), None if (rnd == 19 and k < 5) else f"state-{rnd}-{k}".encode())
                 for k in range(50)]
        offsets = produce(tern.bootstrap, "door-state", batch)
        written += [(o, k, v) for o, (k, v) in zip(offsets, batch)]
    assert [o for o, _, _ in written] == list(range(1000))
    # A group that committed offset 500 before the cleaner removed it.
    c = Consumer({"bootstrap.servers": tern.bootstrap, "group.id": "in-the-gap"})
    c.commit(offsets=[TopicPartition("door-state", 0, 500)], asynchronous=False)
    c.close()

    expected = sorted((o, k, v) for k, (o, v) in latest(written).items())
    wait_for(lambda: read_all(tern.bootstrap, "door-state") == expected, what="a fully compacted log")
    # Offsets are the original ones: the last round's, 950..999 (five of them tombstones).
    assert [o for o, _, _ in expected] == list(range(950, 1000))

    # A consumer group resuming from a committed offset inside a gap gets what follows it.
    c = Consumer({"bootstrap.servers": tern.bootstrap, "group.id": "in-the-gap",
                  "auto.offset.reset": "error", "enable.partition.eof": True})
    c.subscribe(["door-state"])
    got = [(m.offset(), m.key(), m.value()) for m in consume_to_end(c)]
    c.close()
    assert got == expected

    # kcat -e ends on a compacted log (its last segment ends in an emptied batch).
    out = subprocess.run(["kcat", "-C", "-b", tern.bootstrap, "-t", "door-state", "-o", "beginning", "-e",
                          "-f", "%o %k %S\n"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 50, lines
    assert lines[0].startswith("950 lock-0 -1"), lines[0]  # a tombstone: null value
    assert lines[-1] == "999 lock-49 11", lines[-1]  # "state-19-49"

    # The cleaner's figures on /metrics and in `tern topics describe`.
    assert metric(tern, "tern_log_cleaner_dirty_ratio", "door-state") == 0.0
    assert metric(tern, "tern_log_cleaner_partition_reclaimed_bytes", "door-state") > 0
    described = subprocess.run([TERN_BIN, "topics", "describe", "door-state", "--bootstrap-server", tern.bootstrap,
                                "--http", f"127.0.0.1:{tern.http_port}"], capture_output=True, text=True, timeout=30)
    assert described.returncode == 0, described.stderr
    assert "cleanup.policy=compact" in described.stdout, described.stdout
    found = re.search(r"DirtyRatio: 0\.00\tDirtyBytes: 0\tCleanBytes: (\d+)\tLastCleaned: \d+ s ago\tReclaimedBytes: (\d+)",
                      described.stdout)
    assert found and int(found.group(2)) > 0, described.stdout


def test_tombstones_go_after_delete_retention(tern_factory):
    tern = tern_factory(config=FAST)
    create(tern.bootstrap, "devices", {**COMPACTED, "delete.retention.ms": "5000"})
    produce(tern.bootstrap, "devices", [(f"dev-{k}".encode(), b"online") for k in range(10)])
    produce(tern.bootstrap, "devices", [(f"dev-{k}".encode(), None) for k in range(4)])

    def tombstones_replaced_values():
        records = read_all(tern.bootstrap, "devices")
        return len(records) == 10 and sum(v is None for _, _, v in records) == 4

    # First the tombstones replace the values (a consumer still sees the deletions)...
    wait_for(tombstones_replaced_values, timeout=4, what="superseded values removed, tombstones kept")
    # ...then, delete.retention.ms later, the tombstones go too.
    wait_for(lambda: len(read_all(tern.bootstrap, "devices")) == 6, what="expired tombstones removed")
    assert all(v == b"online" for _, _, v in read_all(tern.bootstrap, "devices"))


def test_keyless_records_are_refused(tern_factory):
    tern = tern_factory(config=FAST)
    create(tern.bootstrap, "keyed-only", COMPACTED)
    errors = []
    p = Producer({"bootstrap.servers": tern.bootstrap, "acks": "all", "retries": 0})
    p.produce("keyed-only", value=b"no key", on_delivery=lambda err, msg: errors.append(err))
    p.flush(30)
    assert len(errors) == 1 and errors[0] is not None
    assert errors[0].code() == KafkaError.INVALID_RECORD, errors[0]
    # Keyed records still go in.
    assert produce(tern.bootstrap, "keyed-only", [(b"k", b"v")]) == [0]


def test_a_crash_at_any_cleaner_step_loses_no_key(tern_factory):
    for step in ["staged", "committed", "old-removed", "installed"]:
        tern = tern_factory(config=FAST, name=f"crash-{step}", start=False)
        tern.start()
        create(tern.bootstrap, "door-state", COMPACTED)
        written = []
        for rnd in range(10):
            batch = [(f"lock-{k}".encode(), f"{rnd}-{k}".encode()) for k in range(30)]
            written += list(zip(produce(tern.bootstrap, "door-state", batch), *zip(*batch)))
        tern.stop()
        # Restarted with the hook: the first cleaning aborts the process at `step`.
        tern.env = {"TERN_TEST_CLEANER_ABORT_AT": step}
        tern.start()
        tern.proc.wait(timeout=60)
        assert tern.proc.returncode == -6, f"{step}: tern exited with {tern.proc.returncode}"
        assert f"aborting the process at this cleaner step" in tern.log_text()
        tern.env = {}
        tern.start()
        expected = sorted((o, k, v) for k, (o, v) in latest(written).items())
        records = read_all(tern.bootstrap, "door-state")
        assert latest(records) == latest(expected), f"{step}: a key lost or changed"
        if step in ("committed", "old-removed"):
            # Committed, not finished: recovery finishes the swap. (At `installed` the swap
            # was complete on disk; at `staged` it was never committed.)
            assert "recovery finished the compaction swaps" in tern.log_text(), step
        wait_for(lambda: read_all(tern.bootstrap, "door-state") == expected, what=f"{step}: compaction after restart")
        tern.kill()


def test_a_million_updates_of_a_thousand_keys_shrink_to_the_keys(tern_factory):
    tern = tern_factory(config=FAST)
    create(tern.bootstrap, "meters", {**COMPACTED, "segment.bytes": str(4 << 20)})
    p = Producer({"bootstrap.servers": tern.bootstrap, "acks": "all", "linger.ms": 20,
                  "batch.num.messages": 10000, "queue.buffering.max.messages": 200000})
    started = time.time()
    for i in range(1_000_000):
        while True:
            try:
                p.produce("meters", key=b"meter-%04d" % (i % 1000), value=b'{"kwh":%d}' % i)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(120) == 0
    produced_s = time.time() - started
    wait_for(lambda: metric(tern, "tern_log_size_bytes", "meters") is not None, what="size metric")
    before = metric(tern, "tern_log_size_bytes", "meters")
    started = time.time()
    wait_for(lambda: len(read_all(tern.bootstrap, "meters")) == 1000, timeout=120, what="1,000 records left")
    cleaned_s = time.time() - started
    after = metric(tern, "tern_log_size_bytes", "meters")
    print(f"\n1,000,000 updates of 1,000 keys: {before:.0f} bytes stored (lz4), {after:.0f} bytes after "
          f"compaction ({after / 1000:.0f} bytes per key); produced in {produced_s:.1f} s, "
          f"compacted within {cleaned_s:.1f} s")
    records = read_all(tern.bootstrap, "meters")
    assert {k for _, k, _ in records} == {b"meter-%04d" % k for k in range(1000)}
    assert all(v == b'{"kwh":%d}' % o for o, _, v in records), "each key keeps its last value"
    assert after < 200_000, f"{after} bytes for 1,000 keys"


def test_a_compacted_topic_mirrors_to_the_hub_with_its_gaps(tmp_path):
    """Compaction on the edge while the hub is away: the hub copies the compacted log,
    offsets and gaps included (the same records at the same offsets as the edge)."""
    from mirror_site import caught_up, mirror_pair

    with mirror_pair(tmp_path, extra=FAST) as (_, hub, edge):
        hub.stop()
        create(edge.bootstrap, "door-state", COMPACTED)
        written = []
        for rnd in range(10):
            batch = [(f"lock-{k}".encode(), f"{rnd}-{k}".encode()) for k in range(20)]
            written += list(zip(produce(edge.bootstrap, "door-state", batch), *zip(*batch)))
        expected = sorted((o, k, v) for k, (o, v) in latest(written).items())
        wait_for(lambda: read_all(edge.bootstrap, "door-state") == expected, what="compaction on the edge")
        hub.start()
        wait_for(lambda: caught_up(edge, hub, "gw-1", ["door-state"]), timeout=60, what="the hub to catch up")
        assert read_all(hub.bootstrap, "gw-1.door-state") == expected


def test_the_kafka_sink_forwards_a_compacted_topic(tern_factory):
    """A cleaned topic through `[[sinks.kafka]]` into a cluster (a second tern, which
    checks batches as a Kafka broker does): the records the cleaner kept arrive once, in
    order; the gaps are not holes in the cluster (it numbers its own offsets)."""
    cluster = tern_factory(name="cluster")
    tern = tern_factory(config=FAST + f"""
[[sinks.kafka]]
name = "dc"
bootstrap_servers = ["{cluster.bootstrap}"]
topics = ["door-state"]
retry_backoff_max_ms = 1000
discovery_interval_ms = 500
""", name="gateway", start=False)
    tern.start()
    create(tern.bootstrap, "door-state", COMPACTED)
    # Stop the sink's target first, so that it forwards the log only once it is compacted.
    cluster.stop()
    written = []
    for rnd in range(10):
        batch = [(f"lock-{k}".encode(), f"{rnd}-{k}".encode()) for k in range(20)]
        written += list(zip(produce(tern.bootstrap, "door-state", batch), *zip(*batch)))
    expected = sorted((o, k, v) for k, (o, v) in latest(written).items())
    wait_for(lambda: read_all(tern.bootstrap, "door-state") == expected, what="compaction")
    cluster.start()
    wait_for(lambda: len(read_all(cluster.bootstrap, "door-state")) == len(expected), timeout=60,
             what="the sink to forward the compacted topic")
    got = read_all(cluster.bootstrap, "door-state")
    assert [(k, v) for _, k, v in got] == [(k, v) for _, k, v in expected]
    # Only the outage was complained about: no batch was refused (a thinned batch sent as
    # stored would be, with INVALID_RECORD).
    complaints = [l for l in tern.log_text().splitlines() if "WARN" in l or "ERROR" in l]
    assert all("Connection refused" in l or "closing connection" in l for l in complaints), complaints
