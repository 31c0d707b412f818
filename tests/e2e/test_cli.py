"""The `tern` CLI against a running broker, checked with librdkafka: topic admin,
produce (keys land where the Java/librdkafka murmur2 partitioner puts them), consume,
offsets, and clear errors for bad input."""

import subprocess
import time

from confluent_kafka import Consumer, Producer, TopicPartition

from harness import TERN_BIN


def tern_cli(tern, *args, stdin=None, check=True):
    result = subprocess.run([TERN_BIN, *args, "--bootstrap-server", tern.bootstrap], input=stdin,
                            capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, f"tern {' '.join(args)} failed: {result.stderr}"
    return result


def test_topic_admin_round_trip(tern):
    tern_cli(tern, "topics", "create", "doors", "--partitions", "3", "--config", "retention.ms=3600000")
    assert "doors" in tern_cli(tern, "topics", "list").stdout.split()
    described = tern_cli(tern, "topics", "describe", "doors").stdout
    assert "PartitionCount: 3" in described and "retention.ms=3600000" in described
    tern_cli(tern, "topics", "alter", "doors", "--partitions", "5", "--config", "segment.bytes=1048576",
             "--delete-config", "retention.ms")
    described = tern_cli(tern, "topics", "describe", "doors").stdout
    assert "PartitionCount: 5" in described and "segment.bytes=1048576" in described
    assert "retention.ms=604800000" in described, "deleted override falls back to the default"
    tern_cli(tern, "topics", "delete", "doors")
    assert "doors" not in tern_cli(tern, "topics", "list").stdout.split()


def test_bad_admin_input_gives_clear_errors(tern):
    bad = tern_cli(tern, "topics", "create", "x", "--config", "retention.ms=soon", check=False)
    assert bad.returncode != 0 and "retention.ms" in bad.stderr and "InvalidConfig" in bad.stderr
    bad = tern_cli(tern, "topics", "create", "bad/name", check=False)
    assert bad.returncode != 0 and "invalid topic name" in bad.stderr.lower()
    tern_cli(tern, "topics", "create", "twice")
    bad = tern_cli(tern, "topics", "create", "twice", check=False)
    assert bad.returncode != 0 and "TopicAlreadyExists" in bad.stderr
    bad = tern_cli(tern, "topics", "alter", "twice", "--partitions", "1", check=False)
    assert bad.returncode != 0 and "InvalidPartitions" in bad.stderr
    bad = tern_cli(tern, "topics", "create", "y", "--config", "cleanup.policy=compacted", check=False)
    assert bad.returncode != 0 and "cleanup.policy" in bad.stderr and "compact,delete" in bad.stderr


def test_produce_consume_and_offsets(tern):
    tern_cli(tern, "topics", "create", "sensors", "--partitions", "4")
    lines = "".join(f"device-{i % 40}:reading-{i}\n" for i in range(10_000))
    result = tern_cli(tern, "produce", "-t", "sensors", "--key-separator", ":", stdin=lines)
    assert "10000 records produced" in result.stderr

    # Keyed records land where librdkafka's murmur2 partitioner (= the Java client) puts them.
    probe = Producer({"bootstrap.servers": tern.bootstrap, "partitioner": "murmur2_random"})
    expected = {}
    for d in range(40):
        key = f"device-{d}".encode()
        probe.produce("sensors", key=key, value=b"probe",
                      on_delivery=lambda err, msg, key=key: expected.__setitem__(key, msg.partition()))
    probe.flush(10)
    consumer = Consumer({"bootstrap.servers": tern.bootstrap, "group.id": "cli", "enable.auto.commit": False})
    consumer.assign([TopicPartition("sensors", p, 0) for p in range(4)])
    seen = {}
    count = 0
    deadline = time.time() + 60
    while count < 10_040 and time.time() < deadline:
        for msg in consumer.consume(5000, timeout=1.0):
            assert not msg.error()
            seen.setdefault(msg.key(), set()).add(msg.partition())
            count += 1
    consumer.close()
    assert count == 10_040
    for key, partitions in seen.items():
        assert partitions == {expected[key]}, f"{key} on {partitions}, librdkafka says {expected[key]}"

    out = tern_cli(tern, "consume", "-t", "sensors", "--from-beginning", "--timeout-ms", "1500",
                   "--print-key", "--separator", "=").stdout.splitlines()
    assert len(out) == 10_040
    assert sorted(line for line in out if "reading" in line) == sorted(f"device-{i % 40}=reading-{i}" for i in range(10_000))

    offsets = tern_cli(tern, "offsets", "-t", "sensors").stdout.split()
    assert sum(int(line.rsplit(":", 1)[1]) for line in offsets) == 10_040
    earliest = tern_cli(tern, "offsets", "-t", "sensors", "--time", "earliest").stdout.split()
    assert all(line.endswith(":0") for line in earliest)

    limited = tern_cli(tern, "consume", "-t", "sensors", "--partition", "0", "--offset", "5",
                       "--max-messages", "3", "--print-offset").stdout.splitlines()
    assert [line.split("\t")[0] for line in limited] == ["0:5", "0:6", "0:7"]


def test_cli_reports_an_unreachable_broker(tmp_path):
    result = subprocess.run([TERN_BIN, "topics", "list", "--bootstrap-server", "127.0.0.1:1"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "cannot connect to 127.0.0.1:1" in result.stderr


def test_offsets_by_timestamp_and_health(tern):
    import urllib.request

    producer = Producer({"bootstrap.servers": tern.bootstrap, "linger.ms": 0})
    base = 1_767_225_600_000
    for i in range(100):
        producer.produce("timed", value=f"v{i}".encode(), timestamp=base + i * 1000)
        producer.flush(10)  # one batch per record: the lookup must find the exact record
    lines = tern_cli(tern, "offsets", "-t", "timed", "--time", str(base + 41_500)).stdout.split()
    assert lines == ["timed:0:42"], lines
    lines = tern_cli(tern, "offsets", "-t", "timed", "--time", str(base + 10**9)).stdout.split()
    assert lines == ["timed:0:-1"], "after the last record: no offset"
    with urllib.request.urlopen(f"http://127.0.0.1:{tern.http_port}/healthz", timeout=5) as r:
        assert r.status == 200 and r.read() == b"ok\n"


def test_advertised_address_is_what_clients_are_told(tern_factory):
    from confluent_kafka.admin import AdminClient

    tern = tern_factory(config='[kafka]\nadvertised_host = "localhost"\n')
    brokers = AdminClient({"bootstrap.servers": tern.bootstrap}).list_topics(timeout=10).brokers
    assert [(b.host, b.port) for b in brokers.values()] == [("localhost", tern.kafka_port)]


def test_bad_config_file_is_refused_with_the_key_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[kafka]\nlisten = "127.0.0.1:0"\nmax_conections = 5\n')
    result = subprocess.run([TERN_BIN, "serve", "--config", str(bad)], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "max_conections" in result.stderr
    result = subprocess.run([TERN_BIN, "config", "check", str(bad)], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "max_conections" in result.stderr
    default = subprocess.run([TERN_BIN, "config", "default"], capture_output=True, text=True, timeout=30).stdout
    good = tmp_path / "good.toml"
    good.write_text(default)
    assert subprocess.run([TERN_BIN, "config", "check", str(good)], capture_output=True, timeout=30).returncode == 0


def test_records_delete_moves_the_log_start(tern):
    lines = "".join(f"r{i}\n" for i in range(100))
    tern_cli(tern, "produce", "-t", "purge", "--partition", "0", stdin=lines)
    out = tern_cli(tern, "records", "delete", "-t", "purge", "--before", "40").stdout
    assert "purge:0\tlow watermark 40" in out
    assert tern_cli(tern, "offsets", "-t", "purge", "--time", "earliest").stdout.split() == ["purge:0:40"]
    first = tern_cli(tern, "consume", "-t", "purge", "--from-beginning", "--max-messages", "1").stdout.strip()
    assert first == "r40"
    bad = tern_cli(tern, "records", "delete", "-t", "purge", "--before", "1000", check=False)
    assert bad.returncode != 0 and "OffsetOutOfRange" in bad.stderr
