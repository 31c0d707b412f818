"""kill -9 tern again and again while librdkafka produces with acks=all: after every
restart each acknowledged record is still there, at the offset it was acknowledged with,
offsets are never reused, and nothing torn is ever served."""

import functools

import pytest
import random
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

KILLS = 6
PARTITIONS = 3


@pytest.mark.parametrize("idempotent", [False, True], ids=["plain", "idempotent"])
def test_acknowledged_records_survive_kill_9(tern, idempotent):
    admin = AdminClient({"bootstrap.servers": tern.bootstrap})
    admin.create_topics([NewTopic("crash", num_partitions=PARTITIONS, replication_factor=1)])["crash"].result(30)

    acked = {}  # (partition, offset) -> i
    errors = []
    failures = []  # assertion failures in the producer thread, checked by the main thread
    stop = threading.Event()
    lock = threading.Lock()

    def on_delivery(i, err, msg):
        if err is not None:
            errors.append(str(err))
            return
        with lock:
            key = (msg.partition(), msg.offset())
            if key in acked:
                failures.append(f"offset {key} acknowledged twice")
            acked[key] = i

    def produce():
        try:
            run_producer()
        except Exception as e:  # surfaced by the main thread
            failures.append(f"producer thread: {e!r}")

    def run_producer():
        producer = Producer({
            "bootstrap.servers": tern.bootstrap,
            "acks": "all",
            "linger.ms": 2,
            "message.timeout.ms": 120_000,
            "reconnect.backoff.ms": 20,
            "reconnect.backoff.max.ms": 200,
            "enable.idempotence": idempotent,
        })
        i = 0
        while not stop.is_set():
            try:
                producer.produce("crash", key=f"k{i % 50}".encode(), value=f"record-{i}".encode(),
                                 on_delivery=functools.partial(on_delivery, i))
                i += 1
            except BufferError:
                producer.poll(0.05)
            producer.poll(0)
            if i % 200 == 0:
                time.sleep(0.001)
        left = producer.flush(120)
        if left:
            failures.append(f"{left} records left unacknowledged")

    thread = threading.Thread(target=produce)
    thread.start()
    rng = random.Random(7)
    acked_before_kill = []
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.3, 1.2))
            tern.kill()
            with lock:
                acked_before_kill.append(dict(acked))
            time.sleep(0.1)
            tern.start()
    finally:
        time.sleep(1.0)
        stop.set()
        thread.join(timeout=180)
    assert not thread.is_alive(), "producer did not finish"
    assert not failures, failures
    assert len(acked) > 1000, f"only {len(acked)} records acknowledged: the test proved little"

    consumer = Consumer({"bootstrap.servers": tern.bootstrap, "group.id": "crash-verify",
                         "enable.auto.commit": False, "check.crcs": True})
    ends = {}
    for p in range(PARTITIONS):
        low, high = consumer.get_watermark_offsets(TopicPartition("crash", p), timeout=10)
        ends[p] = high
        assert low == 0
    consumer.assign([TopicPartition("crash", p, 0) for p in range(PARTITIONS)])
    stored = {}
    deadline = time.time() + 120
    while sum(len([k for k in stored if k[0] == p]) for p in range(PARTITIONS)) < sum(ends.values()) and time.time() < deadline:
        for msg in consumer.consume(10_000, timeout=0.5):
            assert not msg.error(), f"consumer error (garbage served?): {msg.error()}"
            stored[(msg.partition(), msg.offset())] = msg.value()
    consumer.close()

    # Offsets are dense: no holes, nothing served twice.
    for p in range(PARTITIONS):
        offsets = sorted(o for q, o in stored if q == p)
        assert offsets == list(range(ends[p])), f"partition {p}: offsets not dense 0..{ends[p]}"
    # Every acknowledged record is there, at its acknowledged offset, byte-exact; this also
    # covers records acknowledged before each kill.
    for snapshot in acked_before_kill + [acked]:
        for key, i in snapshot.items():
            assert stored.get(key) == f"record-{i}".encode(), f"acknowledged record {i} at {key} lost or changed"
    if idempotent:
        # Exactly once and in order: every record at most once, per partition in send order.
        values = {}
        for (p, o), v in stored.items():
            values.setdefault(p, []).append((o, int(v.decode().split("-")[1])))
        all_i = [i for p in values for _, i in values[p]]
        assert len(all_i) == len(set(all_i)), f"{len(all_i) - len(set(all_i))} records stored twice"
        for p, pairs in values.items():
            seq = [i for _, i in sorted(pairs)]
            assert seq == sorted(seq), f"partition {p}: records out of send order"
    print(f"\n{len(acked)} acknowledged, {len(stored)} stored, {len(errors)} delivery errors, {KILLS} kills")
