"""Consumer groups with librdkafka: members share the partitions, survivors take over
from a member killed without leaving and from one that leaves cleanly, every record is
consumed at least once, and committed offsets survive a tern restart."""

import pathlib
import subprocess
import sys
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

HERE = pathlib.Path(__file__).parent
FAST_GROUPS = "[groups]\ninitial_rebalance_delay_ms = 300\nmin_session_timeout_ms = 1000\n"
PARTITIONS = 6


def create_and_fill(bootstrap, topic, n):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    for i in range(n):
        producer.produce(topic, key=f"k{i % 97}".encode(), value=f"v{i}".encode())
        if i % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0


def ends(bootstrap, topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(PARTITIONS)}
    finally:
        c.close()


def committed(bootstrap, group, topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=20)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def read_events(path, kind):
    """(partition, offset, time) of a member's "D" (delivered) or "C" (commit acked) lines."""
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[0] == kind:  # a line cut by kill -9 is ignored
            events.append((int(fields[1]), int(fields[2]), float(fields[3])))
    return events


def read_lines(path):
    """(partition, offset) of every record a member processed."""
    return [(p, o) for p, o, _ in read_events(path, "D")]


def duplicates_outside_uncommitted_ranges(outs):
    """Redeliveries of a record whose offset a commit had already covered: each such
    record is a defect (a commit that did not hold). Returns them and the number of
    redeliveries."""
    deliveries, commits = {}, {}
    for o in outs:
        for p, off, t in read_events(o, "D"):
            deliveries.setdefault((p, off), []).append(t)
        for p, off, t in read_events(o, "C"):
            commits.setdefault(p, []).append((t, off))
    bad, redelivered = [], 0
    for (p, off), times in deliveries.items():
        times.sort()
        for again in times[1:]:
            redelivered += 1
            # The first delivery's consumer may not have committed past `off` before the
            # record was delivered again; a commit covering it means it was not lost-then-
            # -refetched but wrongly refetched.
            if any(c > off and t < again for t, c in commits.get(p, [])):
                bad.append((p, off))
    return bad, redelivered


def start_member(tern, group, topic, out, assignor, instance=None):
    args = [sys.executable, str(HERE / "group_member.py"), tern.bootstrap, group, topic, str(out), assignor]
    if instance:
        args.append(instance)
    return subprocess.Popen(args, stderr=subprocess.DEVNULL)


def wait_until(predicate, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("assignor", ["range", "cooperative-sticky"])
def test_members_share_take_over_and_commits_survive_restart(tern_factory, tmp_path, assignor):
    tern = tern_factory(config=FAST_GROUPS)
    topic, group, n = "events", f"g-{assignor}", 200_000
    create_and_fill(tern.bootstrap, topic, n)
    outs = [tmp_path / f"m{i}.txt" for i in range(3)]
    members = [start_member(tern, group, topic, out, assignor) for out in outs]
    try:
        # All three get work.
        assert wait_until(lambda: all(read_lines(o) for o in outs), 60), "not every member received partitions"
        at_kill = len({pair for o in outs for pair in read_lines(o)})
        members[0].kill()  # kill -9: no LeaveGroup; its partitions move after the session timeout
        members[1].terminate()  # clean shutdown: LeaveGroup
        members[1].wait(timeout=30)
        at_leave = len({pair for o in outs for pair in read_lines(o)})
        assert at_leave < n, "the kill and the leave must happen mid-way (consumers too fast?)"

        def all_consumed():
            seen = {pair for o in outs for pair in read_lines(o)}
            return len(seen) == n

        assert wait_until(all_consumed, 120), "the survivor did not take over every partition"
        end = ends(tern.bootstrap, topic)
        assert wait_until(lambda: committed(tern.bootstrap, group, topic) == end, 30), "commits did not reach the end"
    finally:
        for m in members:
            if m.poll() is None:
                m.terminate()
                m.wait(timeout=30)

    seen = [pair for o in outs for pair in read_lines(o)]
    unique = set(seen)
    assert len(unique) == n and {p for p, _ in unique} == set(range(PARTITIONS))
    for p in range(PARTITIONS):
        offsets = sorted(o for q, o in unique if q == p)
        assert offsets == list(range(end[p])), f"partition {p}: a record was never consumed"
    bad, redelivered = duplicates_outside_uncommitted_ranges(outs)
    assert not bad, f"records redelivered although a commit covered them: {bad[:10]}"
    print(f"\n{assignor}: {len(seen)} deliveries for {n} records ({redelivered} redelivered, all from uncommitted ranges); "
          f"{at_kill} consumed at the kill, {at_leave} at the leave")

    before = committed(tern.bootstrap, group, topic)
    tern.stop()
    tern.start()
    assert committed(tern.bootstrap, group, topic) == before, "committed offsets must survive a restart"


def test_static_member_gets_its_partitions_back_without_a_rebalance(tern_factory, tmp_path):
    tern = tern_factory(config=FAST_GROUPS)
    create_and_fill(tern.bootstrap, "doors", 6_000)
    a_out, b_out = tmp_path / "a.txt", tmp_path / "b.txt"
    a = start_member(tern, "static", "doors", a_out, "range", instance="lock-a")
    b = start_member(tern, "static", "doors", b_out, "range", instance="lock-b")
    try:
        assert wait_until(lambda: read_lines(a_out) and read_lines(b_out), 60)
        assert wait_until(lambda: len(set(read_lines(a_out)) | set(read_lines(b_out))) == 6_000, 60)
        a_partitions = {p for p, _ in read_lines(a_out)}
        b_partitions = {p for p, _ in read_lines(b_out)}
        assert a_partitions and b_partitions and not (a_partitions & b_partitions)
        consumed_before = set(read_lines(a_out)) | set(read_lines(b_out))
        a.kill()  # lock-a crashes and comes back within its session timeout
        a_out.write_text("")
        a = start_member(tern, "static", "doors", a_out, "range", instance="lock-a")
        time.sleep(2)
        create_and_fill_more(tern.bootstrap, "doors", 6_000)
        assert wait_until(lambda: len(consumed_before | set(read_lines(a_out)) | set(read_lines(b_out))) == 12_000, 60)
        assert {p for p, _ in read_lines(a_out)} == a_partitions, "lock-a gets its own partitions back"
        assert {p for p, _ in read_lines(b_out)} == b_partitions, "lock-b was never rebalanced"
    finally:
        for m in (a, b):
            m.terminate()
            m.wait(timeout=30)


def create_and_fill_more(bootstrap, topic, n):
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(n):
        producer.produce(topic, key=f"k{i % 97}".encode(), value=f"more{i}".encode())
    assert producer.flush(60) == 0


def test_groups_cli_describe_reset_and_delete(tern_factory, tmp_path):
    from harness import TERN_BIN

    def cli(*args, check=True):
        r = subprocess.run([TERN_BIN, "groups", *args, "--bootstrap-server", tern.bootstrap],
                           capture_output=True, text=True, timeout=60)
        if check:
            assert r.returncode == 0, r.stderr
        return r

    tern = tern_factory(config=FAST_GROUPS)
    create_and_fill(tern.bootstrap, "meters", 3_000)
    out = tmp_path / "m.txt"
    member = start_member(tern, "billing", "meters", out, "range")
    assert wait_until(lambda: len(read_lines(out)) == 3_000, 60)
    assert wait_until(lambda: sum(committed(tern.bootstrap, "billing", "meters").values()) == 3_000, 30)

    active = cli("describe", "billing").stdout
    assert "is Stable" in active and "rdkafka" in active
    refused = cli("reset-offsets", "billing", "-t", "meters", "--to-earliest", "--execute", check=False)
    assert refused.returncode != 0 and "stop its consumers first" in refused.stderr
    member.terminate()
    member.wait(timeout=30)

    assert "billing" in cli("list").stdout.split()
    rows = [line.split() for line in cli("describe", "billing").stdout.splitlines() if line.startswith("billing ")]
    assert len(rows) == PARTITIONS and all(r[5] == "0" for r in rows), rows  # LAG 0 everywhere

    dry = cli("reset-offsets", "billing", "-t", "meters", "--to-earliest").stdout
    assert "dry run" in dry
    assert sum(committed(tern.bootstrap, "billing", "meters").values()) == 3_000, "a dry run changes nothing"
    cli("reset-offsets", "billing", "-t", "meters", "--shift-by", "-10", "--execute")
    assert sum(committed(tern.bootstrap, "billing", "meters").values()) == 3_000 - 10 * PARTITIONS
    cli("reset-offsets", "billing", "-t", "meters", "--to-earliest", "--execute")
    rows = [line.split() for line in cli("describe", "billing").stdout.splitlines() if line.startswith("billing ")]
    assert all(r[3] == "0" and r[5] == r[4] for r in rows), rows  # CURRENT 0, LAG = LOG-END

    # Its consumers then start where told: from the beginning again.
    out2 = tmp_path / "m2.txt"
    again = start_member(tern, "billing", "meters", out2, "range")
    try:
        assert wait_until(lambda: len(read_lines(out2)) == 3_000, 60)
    finally:
        again.terminate()
        again.wait(timeout=30)

    cli("delete", "billing")
    assert "billing" not in cli("list").stdout.split()
    missing = cli("delete", "billing", check=False)
    assert missing.returncode != 0 and "GroupIdNotFound" in missing.stderr


def test_group_requests_with_bad_input_get_kafka_errors(tern_factory, tmp_path):
    """Commits for unknown partitions, stale generations, unknown members and oversized
    metadata are refused with Kafka's codes and change nothing."""
    import socket
    import struct

    from harness import TERN_BIN
    from test_bad_input import frame, read_response

    tern = tern_factory(config=FAST_GROUPS)
    create_and_fill(tern.bootstrap, "audit", 100)

    def commit(group, generation, member, topic, partition, offset, metadata=b""):
        body = (struct.pack(">h", len(group)) + group + struct.pack(">i", generation)
                + struct.pack(">h", len(member)) + member + struct.pack(">q", -1)  # retention
                + struct.pack(">i", 1) + struct.pack(">h", len(topic)) + topic
                + struct.pack(">i", 1) + struct.pack(">iq", partition, offset)
                + struct.pack(">h", len(metadata)) + metadata)
        with socket.create_connection(("127.0.0.1", tern.kafka_port), timeout=10) as s:
            s.sendall(frame(8, 2, 1, body))  # OffsetCommit v2
            resp = read_response(s)
        # correlation, topics[1], name, partitions[1], index, error
        name_len = struct.unpack(">h", resp[8:10])[0]
        at = 10 + name_len + 4 + 4
        return struct.unpack(">h", resp[at:at + 2])[0]

    assert commit(b"ops", -1, b"", b"audit", 0, 5) == 0
    assert commit(b"ops", -1, b"", b"audit", 99, 5) == 3, "UNKNOWN_TOPIC_OR_PARTITION"
    assert commit(b"ops", -1, b"", b"nope", 0, 5) == 3
    assert commit(b"ops", -1, b"", b"audit", 0, 6, metadata=b"x" * 5000) == 12, "OFFSET_METADATA_TOO_LARGE"
    assert commit(b"ops", 3, b"ghost", b"audit", 0, 7) == 25, "UNKNOWN_MEMBER_ID"
    out = tmp_path / "m.txt"
    member = start_member(tern, "ops", "audit", out, "range")
    try:
        assert wait_until(lambda: len(read_lines(out)) >= 95, 60)
        assert commit(b"ops", -1, b"", b"audit", 0, 1) == 25, "a simple commit into an active group"
        assert commit(b"ops", 0, b"ghost", b"audit", 0, 1) == 25
        described = subprocess.run([TERN_BIN, "groups", "describe", "ops", "--bootstrap-server", tern.bootstrap],
                                   capture_output=True, text=True, timeout=60, check=True).stdout
        member_id = next(line.split()[6] for line in described.splitlines() if line.startswith("ops "))
        assert commit(b"ops", 0, member_id.encode(), b"audit", 0, 1) == 22, "ILLEGAL_GENERATION (from the past)"
    finally:
        member.terminate()
        member.wait(timeout=30)
    assert committed(tern.bootstrap, "ops", "audit")[0] != 1, "refused commits changed nothing"


def test_transactional_producers_get_a_clear_refusal(tern):
    """Transactions are not supported: a transactional producer fails at once with a fatal
    error (no endless retries), the broker says why, and plain producers go on."""
    from confluent_kafka import KafkaException
    from kafka import KafkaProducer

    txn = Producer({"bootstrap.servers": tern.bootstrap, "transactional.id": "door-tx"})
    with pytest.raises(KafkaException) as refused:
        txn.init_transactions(15)
    error = refused.value.args[0]
    assert error.fatal() and error.name() == "TRANSACTIONAL_ID_AUTHORIZATION_FAILED", error

    with pytest.raises(Exception) as refused_py:
        KafkaProducer(bootstrap_servers=tern.bootstrap, transactional_id="py-tx", api_version=(2, 5)).init_transactions()
    assert "TransactionalIdAuthorizationFailed" in type(refused_py.value).__name__, refused_py.value

    assert "tern does not support transactions" in tern.log_path.read_text()
    plain = Producer({"bootstrap.servers": tern.bootstrap, "enable.idempotence": True})
    plain.produce("after-txn", b"still works")
    assert plain.flush(30) == 0
