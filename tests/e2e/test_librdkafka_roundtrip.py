"""librdkafka (confluent-kafka) produces 100,000 keyed records with headers and
timestamps, 50-byte readings up to 1 MiB snapshots, once per producer compression, to a
3-partition topic; everything is read back byte-exact and in order, again after a
restart."""

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from clients import consume_librdkafka, produce_librdkafka, verify

N = 100_000
SNAPSHOT_EVERY = 5_000  # 20 snapshots of 1 MiB per run
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def create_topic(bootstrap: str, name: str, partitions: int, configs: dict):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1, config=configs)])
    futures[name].result(timeout=30)


def test_every_codec_round_trips_byte_exact_and_survives_restart(tern):
    runs = {}
    for codec in CODECS:
        topic = f"sensors-{codec}"
        create_topic(tern.bootstrap, topic, 3, {"max.message.bytes": str(4 << 20)})
        placed = produce_librdkafka(tern.bootstrap, topic, N, codec, SNAPSHOT_EVERY, tag=codec)
        got, order = consume_librdkafka(tern.bootstrap, topic, 3, expect=N)
        verify(placed, got, order, SNAPSHOT_EVERY, tag=codec)
        assert {p for p, _ in placed} == {0, 1, 2}, "keys must spread over all 3 partitions"
        runs[codec] = placed

    assert tern.stop() == 0, "graceful shutdown must exit 0"
    tern.start()
    for codec, placed in runs.items():
        got, order = consume_librdkafka(tern.bootstrap, f"sensors-{codec}", 3, expect=N)
        verify(placed, got, order, SNAPSHOT_EVERY, tag=codec)


def test_lz4_storage_shrinks_json_events(tern):
    """Uncompressed producer batches are compressed once on append."""
    create_topic(tern.bootstrap, "json", 1, {})
    produce_librdkafka(tern.bootstrap, "json", 20_000, "none", 0, tag="ratio")
    metrics = tern.metrics()
    stored = sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith('tern_log_size_bytes{') and 'topic="json"' in line
    )
    from clients import value_of

    raw = sum(len(value_of(i, 0)) for i in range(20_000))
    assert 0 < stored < raw * 0.5, f"stored {stored} bytes for {raw} raw payload bytes"


@pytest.mark.parametrize("size", [1 << 20])
def test_record_over_max_message_bytes_is_refused_and_nothing_is_stored(tern, size):
    from confluent_kafka import KafkaException, Producer

    create_topic(tern.bootstrap, "small", 1, {"max.message.bytes": "65536"})
    producer = Producer({"bootstrap.servers": tern.bootstrap, "message.max.bytes": 4 << 20, "compression.type": "none"})
    errors = []
    producer.produce("small", value=b"x" * size, on_delivery=lambda err, msg: errors.append(err))
    producer.flush(30)
    assert errors and errors[0] is not None, "an oversized record must be refused"
    assert "MSG_SIZE_TOO_LARGE" in str(errors[0]) or "too large" in str(errors[0]).lower(), str(errors[0])
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": tern.bootstrap, "group.id": "x"})
    low, high = c.get_watermark_offsets(TopicPartition("small", 0), timeout=10)
    c.close()
    assert (low, high) == (0, 0)
    _ = KafkaException
