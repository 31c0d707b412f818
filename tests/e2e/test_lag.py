"""Consumer lag judged by Burrow's rules, and the JSON API that shows it. Real librdkafka
consumer groups against a tern whose lag window is short (5 commits, sampled every 200 ms):
a consumer that stops committing while records keep coming is STOP (group ERR), one that
commits without moving is STALL, a rewind is REWIND, a caught-up consumer of an idle topic
is OK. The record browser and the API's refusals are checked here too."""

import json
import threading
import time
import urllib.error
import urllib.request

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from harness import FAST_LAG, Tern


@pytest.fixture
def tern(tmp_path):
    t = Tern(tmp_path / "tern", config=FAST_LAG + """
[groups]
initial_rebalance_delay_ms = 0
""")
    t.start()
    yield t
    t.kill()


def get(tern, path):
    url = f"http://127.0.0.1:{tern.http_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def produce(tern, topic, count, start=0):
    p = Producer({"bootstrap.servers": tern.bootstrap, "linger.ms": 5})
    for i in range(start, start + count):
        p.produce(topic, key=f"lock-{i % 7}".encode(), value=json.dumps({"n": i, "locked": i % 2 == 0}).encode())
    assert p.flush(30) == 0


def commit(tern, group, topic, offset):
    c = Consumer({"bootstrap.servers": tern.bootstrap, "group.id": group, "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    c.close()


def status_of(tern, group):
    code, body = get(tern, f"/v1/groups/{group}")
    assert code == 200, body
    return body["lag"]["status"], [p["status"] for p in body["lag"]["partitions"]], body


def wait_status(tern, group, want, seconds=20):
    deadline = time.time() + seconds
    seen = None
    while time.time() < deadline:
        seen = status_of(tern, group)
        if seen[0] == want[0] and seen[1] == want[1]:
            return seen[2]
        time.sleep(0.2)
    raise AssertionError(f"{group}: wanted {want}, last seen {seen[:2]}: {json.dumps(seen[2])[:2000]}")


def test_burrow_statuses_for_real_groups(tern):
    produce(tern, "readings", 1000)

    # A consumer that commits with lag, moving forward, then stops committing while the
    # topic keeps growing: STOP for the partition, ERR for the group.
    for offset in range(100, 600, 100):
        commit(tern, "stopper", "readings", offset)
        produce(tern, "readings", 50)
        time.sleep(0.25)
    body = wait_status(tern, "stopper", ("ERR", ["STOP"]))
    assert body["lag"]["partitions"][0]["committed"] == 500

    # Commits that never move while records arrive: STALL.
    for _ in range(6):
        commit(tern, "staller", "readings", 300)
        produce(tern, "readings", 20)
        time.sleep(0.25)
    wait_status(tern, "staller", ("ERR", ["STALL"]), seconds=5)

    # Moving forward, then back: REWIND.
    for offset in (400, 500, 600, 100):
        commit(tern, "rewinder", "readings", offset)
        time.sleep(0.25)
    wait_status(tern, "rewinder", ("ERR", ["REWIND"]), seconds=5)

    # A consumer that read everything of an idle topic and then stopped: OK, lag 0.
    produce(tern, "quiet", 200)
    c = Consumer({"bootstrap.servers": tern.bootstrap, "group.id": "reader", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe(["quiet"])
    read, deadline = 0, time.time() + 30
    while read < 200 and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            read += 1
    c.commit(asynchronous=False)
    c.close()
    time.sleep(2)  # long past its last commit: still OK, because nothing is waiting for it
    body = wait_status(tern, "reader", ("OK", ["OK"]), seconds=5)
    assert body["lag"]["total_lag"] == 0

    # The list, and /metrics for Prometheus alerts (3 = ERR).
    code, listed = get(tern, "/v1/groups")
    assert code == 200
    by_name = {g["group"]: g for g in listed["groups"]}
    assert by_name["stopper"]["status"] == "ERR" and by_name["reader"]["status"] == "OK"
    assert by_name["stopper"]["total_lag"] > 0
    metrics = tern.metrics()
    assert 'tern_consumer_group_status{group="stopper"} 3' in metrics, metrics[-3000:]
    assert 'tern_consumer_group_lag{group="reader"} 0' in metrics


def test_record_browser_and_refusals(tern):
    produce(tern, "doors", 50)
    code, page = get(tern, "/v1/topics/doors/records?limit=5")
    assert code == 200, page
    assert [r["offset"] for r in page["records"]] == [45, 46, 47, 48, 49]
    assert page["records"][0]["value"] == {"encoding": "json", "data": {"n": 45, "locked": False}}
    assert page["records"][0]["key"] == {"encoding": "text", "data": "lock-3"}
    code, page = get(tern, "/v1/topics/doors/records?offset=10&limit=3")
    assert [r["offset"] for r in page["records"]] == [10, 11, 12] and page["next_offset"] == 13
    code, page = get(tern, "/v1/topics/doors/records?timestamp=0&limit=1")
    assert page["records"][0]["offset"] == 0

    code, topics = get(tern, "/v1/topics")
    doors = [t for t in topics["topics"] if t["name"] == "doors"][0]
    assert doors["partitions"] == 1 and doors["records"] == 50 and doors["bytes"] > 0
    code, detail = get(tern, "/v1/topics/doors")
    assert detail["partition_details"][0]["log_end"] == 50
    code, broker = get(tern, "/v1/broker")
    assert code == 200 and broker["topics"] >= 1 and broker["disk_used_bytes"] > 0

    for path, want in [
        ("/v1/topics/nope", 404),
        ("/v1/topics/nope/records", 404),
        ("/v1/topics/doors/records?partition=9", 404),
        ("/v1/topics/doors/records?offset=5000", 400),
        ("/v1/topics/doors/records?limit=100000", 400),
        ("/v1/topics/doors/records?limit=0", 400),
        ("/v1/topics/doors/records?offset=1&timestamp=1", 400),
        ("/v1/topics/doors/records?offset=abc", 400),
        ("/v1/topics/doors/records?colour=red", 400),
        ("/v1/groups/nobody", 404),
    ]:
        code, body = get(tern, path)
        assert code == want and body["error"], (path, code, body)


def test_consumer_offsets_topic_reads_as_kafkas_format_and_refuses_writes(tern):
    """Tools that read Kafka's offsets topic (Burrow, monitoring agents, kcat) read tern's."""
    import struct

    from confluent_kafka import KafkaError
    from confluent_kafka.admin import AdminClient

    produce(tern, "doors", 10)
    commit(tern, "dash", "doors", 7)
    c = Consumer({"bootstrap.servers": tern.bootstrap, "group.id": "reader-of-offsets",
                  "enable.auto.commit": False})
    c.assign([TopicPartition("__consumer_offsets", 0, 0)])
    found = None
    deadline = time.time() + 20
    while found is None and time.time() < deadline:
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        key, value = m.key(), m.value()
        version, = struct.unpack(">h", key[:2])
        if version not in (0, 1):
            continue  # group metadata (version 2) is not about offsets
        pos = 2
        parts = []
        for _ in range(2):
            n, = struct.unpack(">h", key[pos:pos + 2])
            parts.append(key[pos + 2:pos + 2 + n].decode())
            pos += 2 + n
        partition, = struct.unpack(">i", key[pos:pos + 4])
        value_version, offset = struct.unpack(">hq", value[:10])
        if parts == ["dash", "doors"]:
            found = (partition, value_version, offset)
    c.close()
    assert found == (0, 3, 7), found

    # Internal in Metadata, and closed to producers.
    from confluent_kafka import TopicCollection

    admin = AdminClient({"bootstrap.servers": tern.bootstrap})
    described = admin.describe_topics(TopicCollection(["__consumer_offsets"]))
    assert described["__consumer_offsets"].result(timeout=10).is_internal
    errors = []
    p = Producer({"bootstrap.servers": tern.bootstrap, "message.timeout.ms": 5000})
    p.produce("__consumer_offsets", value=b"forged", on_delivery=lambda err, msg: errors.append(err))
    p.flush(10)
    # INVALID_TOPIC_EXCEPTION (17), librdkafka's TOPIC_EXCEPTION.
    assert errors and errors[0] is not None and errors[0].code() == KafkaError.TOPIC_EXCEPTION, errors
