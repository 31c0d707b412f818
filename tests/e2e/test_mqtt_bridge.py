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
