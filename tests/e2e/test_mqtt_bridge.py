"""The MQTT bridge against a real mosquitto: MQTT devices become keyed tern records with
their MQTT metadata as headers, nothing is lost when tern or mosquitto go down, and tern
records become MQTT commands for the devices."""

import subprocess
import sys
import time
from collections import Counter

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from mosquitto import Mosquitto, bridge_config
from mqtt_clients import device, payload

HERE = __import__("pathlib").Path(__file__).parent
SENSORS = {"filter": "sensors/+/temperature", "topic": "sensors", "key": "{1}", "partitions": 3}


def publisher(mosq, count, devices=100, qos=1, v5=False, start=0):
    args = [sys.executable, str(HERE / "mqtt_clients.py"), "publish", str(mosq.port), str(count), str(devices), str(qos)]
    if v5:
        args.append("--v5")
    args += ["--start", str(start)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True)


def finish(proc, timeout=600):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0 and "published" in out, f"publisher failed: {out}"


def read_all(bootstrap, topic, expected, timeout=120):
    """Every record of `topic` once `expected` distinct payloads have arrived."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.time()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    records, distinct = [], set()
    deadline = time.time() + timeout
    try:
        while len(distinct) < expected and time.time() < deadline:
            for m in c.consume(1000, timeout=0.5):
                if m.error():
                    continue
                records.append(m)
                distinct.add(m.value())
        return records
    finally:
        c.close()


def seq_of(value):
    return int(value.split(b":", 1)[0])


def test_50k_qos1_messages_become_keyed_records_with_headers(tern_factory, tmp_path):
    mosq = Mosquitto(tmp_path / "mq").start()
    tern = tern_factory(config=bridge_config(mosq, inbound=[SENSORS]))
    try:
        finish(publisher(mosq, 50_000))
        records = read_all(tern.bootstrap, "sensors", 50_000)
        by_seq = {}
        for m in records:
            by_seq.setdefault(seq_of(m.value()), m)
        assert sorted(by_seq) == list(range(50_000)), "every message arrived"
        partition_of_key = {}
        for i, m in by_seq.items():
            assert m.value() == payload(i), f"message {i} is byte-exact"
            assert m.key() == device(i, 100).encode()
            headers = dict(m.headers())
            assert headers["mqtt.topic"] == f"sensors/{device(i, 100)}/temperature".encode()
            assert headers["mqtt.qos"] == b"1" and headers["mqtt.retain"] == b"false"
            assert partition_of_key.setdefault(m.key(), m.partition()) == m.partition(), "a device stays on one partition"
        # Keys land where Kafka's Java partitioner (murmur2) puts them: check with librdkafka's.
        p = Producer({"bootstrap.servers": tern.bootstrap, "partitioner": "murmur2_random"})
        landed = {}
        for key in list(partition_of_key)[:20]:
            p.produce("sensors", key=key, value=b"probe", on_delivery=lambda e, m: landed.__setitem__(m.key(), m.partition()))
        assert p.flush(30) == 0
        assert all(landed[k] == partition_of_key[k] for k in landed), (landed, partition_of_key)
        print(f"\n50,000 messages → {len(records)} records ({len(records) - 50_000} duplicates)")
    finally:
        mosq.stop()


def count_deliveries(records, n):
    seqs = Counter(seq_of(m.value()) for m in records)
    missing = [i for i in range(n) if i not in seqs]
    return missing, sum(c - 1 for c in seqs.values())


def test_kill_tern_mid_stream_loses_nothing(tern_factory, tmp_path):
    mosq = Mosquitto(tmp_path / "mq").start()
    tern = tern_factory(config=bridge_config(mosq, inbound=[SENSORS]))
    n = 40_000
    try:
        pub = publisher(mosq, n)
        kills = 0
        for _ in range(3):
            time.sleep(0.7)
            tern.kill()  # kill -9 while the publisher keeps publishing into mosquitto
            kills += 1
            time.sleep(0.3)
            tern.start()
        finish(pub)
        records = read_all(tern.bootstrap, "sensors", n)
        missing, duplicates = count_deliveries(records, n)
        assert not missing, f"{len(missing)} messages lost, e.g. {missing[:10]}"
        # Duplicates can only come from the window appended but not yet acknowledged.
        assert duplicates <= kills * 1000, f"{duplicates} duplicates exceed {kills} × max_inflight"
        print(f"\n{kills} × kill -9: {n} messages, 0 lost, {duplicates} duplicates (unacknowledged window)")
    finally:
        mosq.stop()


def test_mosquitto_restart_mid_stream_loses_nothing(tern_factory, tmp_path):
    mosq = Mosquitto(tmp_path / "mq").start()
    tern = tern_factory(config=bridge_config(mosq, inbound=[SENSORS], extra="reconnect_max_ms = 500"))
    n = 30_000
    try:
        pub = publisher(mosq, n)
        time.sleep(1.0)
        mosq.stop()  # graceful: mosquitto saves sessions and queued messages
        time.sleep(1.0)
        mosq.start()
        finish(pub)
        records = read_all(tern.bootstrap, "sensors", n)
        missing, duplicates = count_deliveries(records, n)
        assert not missing, f"{len(missing)} messages lost, e.g. {missing[:10]}"
        reconnects = [l for l in tern.metrics().splitlines() if l.startswith("tern_mqtt_reconnects_total") and 'direction="in"' in l]
        assert reconnects and float(reconnects[0].split()[-1]) >= 1, reconnects
        print(f"\nmosquitto restart: {n} messages, 0 lost, {duplicates} duplicates")
    finally:
        mosq.stop()


def subscriber(mosq, topic_filter, out):
    return subprocess.Popen([sys.executable, str(HERE / "mqtt_clients.py"), "subscribe", str(mosq.port), topic_filter, str(out)])


def received_lines(out):
    if not out.exists():
        return []
    return [line.split("\t", 1) for line in out.read_text().splitlines() if "\t" in line]


def test_outbound_commands_reach_devices_through_a_kill(tern_factory, tmp_path):
    mosq = Mosquitto(tmp_path / "mq").start()
    rule = {"topic": "commands", "mqtt_topic": "devices/{key}/cmd", "qos": 1}
    tern = tern_factory(config=bridge_config(mosq, outbound=[rule]))
    out = tmp_path / "cmds.txt"
    sub = subscriber(mosq, "devices/+/cmd", out)
    n = 10_000
    try:
        time.sleep(1)  # the subscriber's session exists before commands flow
        producer = Producer({"bootstrap.servers": tern.bootstrap, "linger.ms": 5})
        for i in range(n // 2):
            producer.produce("commands", key=f"lock-{i % 100}", value=f"open {i}")
        assert producer.flush(30) == 0
        deadline = time.time() + 30
        while len(received_lines(out)) < 1000 and time.time() < deadline:
            time.sleep(0.05)
        tern.kill()  # mid-way
        tern.start()
        producer = Producer({"bootstrap.servers": tern.bootstrap, "linger.ms": 5})
        for i in range(n // 2, n):
            producer.produce("commands", key=f"lock-{i % 100}", value=f"open {i}")
        assert producer.flush(30) == 0

        def distinct():
            return {tuple(l) for l in received_lines(out)}

        deadline = time.time() + 120
        while len(distinct()) < n and time.time() < deadline:
            time.sleep(0.2)
        got = distinct()
        expected = {(f"devices/lock-{i % 100}/cmd", f"open {i}") for i in range(n)}
        assert got == expected, f"{len(expected - got)} commands missing, {len(got - expected)} unexpected"
        total = len(received_lines(out))
        print(f"\noutbound: {n} commands delivered on the right topics, {total - n} duplicates after the kill")
        rows = subprocess.run([TERN_BIN(), "groups", "describe", "tern-mqtt-gw", "--bootstrap-server", tern.bootstrap],
                              capture_output=True, text=True, timeout=60, check=True).stdout
        assert "commands" in rows, rows
    finally:
        sub.terminate()
        sub.wait(timeout=10)
        mosq.stop()


def TERN_BIN():
    from harness import TERN_BIN as binary
    return binary
