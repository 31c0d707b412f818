"""Shared helpers for the real-client tests: deterministic records and verification."""

import functools
import hashlib
import random
import time

BASE_TS = 1_767_225_600_000  # 2026-01-01T00:00:00Z, in ms
SNAPSHOT_BYTES = 1 << 20


def key_of(i: int) -> bytes:
    return f"sensor-{i % 100}".encode()


def value_of(i: int, snapshot_every: int) -> bytes:
    """50-100 byte JSON sensor readings, and now and then a 1 MiB camera snapshot."""
    if snapshot_every and i % snapshot_every == snapshot_every - 1:
        return random.Random(i).randbytes(SNAPSHOT_BYTES)
    return (
        f'{{"device":"sensor-{i % 100}","temp_c":{18 + (i % 170) / 10:.1f},'
        f'"humidity":{30 + i % 50},"seq":{i}}}'
    ).encode()


def headers_of(i: int, tag: str) -> list:
    return [("seq", str(i).encode()), ("run", tag.encode())]


def digest(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


def expected(i: int, snapshot_every: int, tag: str) -> tuple:
    """What a consumer must read back for record i: key, value digest, headers, timestamp."""
    return (key_of(i), digest(value_of(i, snapshot_every)), headers_of(i, tag), BASE_TS + i)


def produce_librdkafka(bootstrap: str, topic: str, n: int, codec: str, snapshot_every: int, tag: str, extra=None):
    """Produces n records with confluent-kafka (librdkafka); returns {(partition, offset): i}."""
    from confluent_kafka import Producer

    config = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "compression.type": codec,
        "linger.ms": 5,
        "message.max.bytes": 4 * SNAPSHOT_BYTES,
        "queue.buffering.max.kbytes": 256 * 1024,
        "enable.idempotence": False,
    }
    config.update(extra or {})
    producer = Producer(config)
    placed = {}
    failures = []

    def on_delivery(i, err, msg):
        if err is not None:
            failures.append(str(err))
        else:
            placed[(msg.partition(), msg.offset())] = i

    for i in range(n):
        while True:
            try:
                producer.produce(
                    topic,
                    key=key_of(i),
                    value=value_of(i, snapshot_every),
                    headers=headers_of(i, tag),
                    timestamp=BASE_TS + i,
                    on_delivery=functools.partial(on_delivery, i),
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(120)
    assert remaining == 0, f"{remaining} records still unacknowledged after 120 s"
    assert not failures, f"{len(failures)} records failed, first: {failures[0]}"
    assert len(placed) == n, f"{len(placed)} offsets for {n} records"
    return placed


def consume_librdkafka(bootstrap: str, topic: str, partitions: int, expect: int, timeout: float = 120.0):
    """Reads every partition from offset 0 with assign() (no group); returns
    {(partition, offset): (key, value digest, headers, timestamp)} and per-partition order."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "e2e-verify",
            "enable.auto.commit": False,
            "fetch.message.max.bytes": 4 * SNAPSHOT_BYTES,
            "enable.partition.eof": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = {}
    order = {p: [] for p in range(partitions)}
    deadline = time.time() + timeout
    try:
        while len(got) < expect and time.time() < deadline:
            for msg in consumer.consume(num_messages=10_000, timeout=0.5):
                if msg.error():
                    raise AssertionError(f"consumer error: {msg.error()}")
                ts_type, ts = msg.timestamp()
                got[(msg.partition(), msg.offset())] = (msg.key(), digest(msg.value()), msg.headers() or [], ts)
                order[msg.partition()].append(msg.offset())
    finally:
        consumer.close()
    return got, order


def verify(placed: dict, got: dict, order: dict, snapshot_every: int, tag: str):
    missing = [k for k in placed if k not in got]
    assert not missing, f"{len(missing)} acknowledged records not read back, e.g. {missing[:5]}"
    extra = [k for k in got if k not in placed]
    assert not extra, f"{len(extra)} records read that were never produced, e.g. {extra[:5]}"
    for (partition, offset), i in placed.items():
        want = expected(i, snapshot_every, tag)
        have = got[(partition, offset)]
        assert have == want, f"record {i} at {partition}/{offset} differs: {have[:1]}.. vs {want[:1]}.."
    for partition, offsets in order.items():
        assert offsets == sorted(offsets), f"partition {partition} delivered out of order"
        assert len(offsets) == len(set(offsets)), f"partition {partition} delivered duplicates"


def consume_to_end(consumer, timeout: float = 30.0, missing_topic_ok: bool = False) -> list:
    """The messages a librdkafka consumer (with enable.partition.eof) delivers until it
    reaches the end of its one partition; any other consumer error fails the test."""
    from confluent_kafka import KafkaError

    out, deadline = [], time.time() + timeout
    while time.time() < deadline:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                return out
            if missing_topic_ok and msg.error().code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                return out
            raise AssertionError(f"consumer error: {msg.error()}")
        out.append(msg)
    raise AssertionError(f"no end of partition within {timeout} s; read {len(out)}")
