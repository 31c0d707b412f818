"""A second client family: kafka-python (pure Python, its own protocol code) produces
and consumes the same kind of records and reads what librdkafka wrote."""

import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from clients import BASE_TS, consume_librdkafka, digest, headers_of, key_of, produce_librdkafka, value_of

N = 10_000
SNAPSHOT_EVERY = 2_500


def kafka_python_consume(bootstrap, topic, partitions, expect, timeout=60.0):
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=4 << 20,
        fetch_max_bytes=8 << 20,
        consumer_timeout_ms=2_000,
    )
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    got = {}
    deadline = time.time() + timeout
    while len(got) < expect and time.time() < deadline:
        for batch in consumer.poll(timeout_ms=500, max_records=5_000).values():
            for r in batch:
                got[(r.partition, r.offset)] = (r.key, digest(r.value), list(r.headers), r.timestamp)
    consumer.close()
    return got


def test_kafka_python_round_trip_and_cross_client_reads(tern):
    admin = KafkaAdminClient(bootstrap_servers=tern.bootstrap)
    admin.create_topics([NewTopic("kp", num_partitions=3, replication_factor=1, topic_configs={"max.message.bytes": str(4 << 20)})])
    topics = admin.list_topics()
    admin.close()
    assert "kp" in topics

    total = 0
    for codec in [None, "gzip", "lz4"]:
        tag = f"kp-{codec}"
        producer = KafkaProducer(
            bootstrap_servers=tern.bootstrap,
            acks="all",
            compression_type=codec,
            max_request_size=4 << 20,
            linger_ms=5,
            # kafka-python 3 is idempotent by default (InitProducerId + sequences), as the
            # Java client is.
        )
        futures = []
        for i in range(N):
            futures.append(
                (i, producer.send("kp", key=key_of(i), value=value_of(i, SNAPSHOT_EVERY),
                                  headers=headers_of(i, tag), timestamp_ms=BASE_TS + i))
            )
        producer.flush(60)
        placed = {}
        for i, f in futures:
            meta = f.get(timeout=30)
            placed[(meta.partition, meta.offset)] = i
        producer.close()
        assert len(placed) == N

        total += len(placed)
        got = kafka_python_consume(tern.bootstrap, "kp", 3, expect=total)
        for (p, o), i in placed.items():
            assert got.get((p, o)) == (key_of(i), digest(value_of(i, SNAPSHOT_EVERY)), headers_of(i, tag), BASE_TS + i), (
                f"record {i} at {p}/{o} differs or is missing"
            )

    # librdkafka reads what kafka-python wrote, and kafka-python what librdkafka wrote.
    rd_got, _ = consume_librdkafka(tern.bootstrap, "kp", 3, expect=3 * N)
    assert len(rd_got) == 3 * N
    placed = produce_librdkafka(tern.bootstrap, "from-rdkafka-lz4", 5_000, "lz4", 0, tag="x")
    got = kafka_python_consume(tern.bootstrap, "from-rdkafka-lz4", 1, expect=5_000)
    assert set(got) == set(placed)


def test_kafka_python_consumer_group_commits_and_resumes(tern_factory):
    """kafka-python's group protocol versions (non-flexible) against tern's coordinator."""
    tern = tern_factory(config="[groups]\ninitial_rebalance_delay_ms = 200\nmin_session_timeout_ms = 1000\n")
    admin = KafkaAdminClient(bootstrap_servers=tern.bootstrap)
    admin.create_topics([NewTopic("kp-group", num_partitions=3, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=tern.bootstrap, acks="all")
    for i in range(3_000):
        producer.send("kp-group", key=f"k{i % 10}".encode(), value=f"v{i}".encode())
    producer.flush(30)
    producer.close()

    def consume(limit):
        consumer = KafkaConsumer("kp-group", bootstrap_servers=tern.bootstrap, group_id="kp",
                                 auto_offset_reset="earliest", enable_auto_commit=False,
                                 consumer_timeout_ms=5_000, session_timeout_ms=6_000, heartbeat_interval_ms=500)
        got = []
        for record in consumer:
            got.append((record.partition, record.offset))
            if len(got) == limit:
                break
        consumer.commit()
        consumer.close()
        return got

    first = consume(1_000)
    assert len(first) == 1_000
    rest = consume(10_000)
    assert len(rest) == 2_000, "the second consumer resumes at the committed offsets"
    assert not set(first) & set(rest)
    admin = KafkaAdminClient(bootstrap_servers=tern.bootstrap)
    listed = admin.list_groups()
    assert "kp" in str(listed), listed
    offsets = admin.list_group_offsets("kp")
    admin.close()
    assert sum(meta.offset for meta in offsets["kp"].values()) == 3_000, offsets
