"""Soak: a steady gateway load with retention active — MQTT sensors through the bridge,
a librdkafka producer, a consumer group committing — and nothing may grow: tern's RSS,
open file descriptors, threads and disk use level off.

SOAK_S sets the measured time (120 s in the test suite; the long run is an hour):
    SOAK_S=3600 python3 -m pytest -s tests/e2e/test_soak.py
"""

import os
import pathlib
import statistics
import threading
import time

import paho.mqtt.client as mqtt
from confluent_kafka import Consumer, Producer

from mosquitto import Mosquitto, bridge_config

SOAK_S = float(os.environ.get("SOAK_S", "120"))
SAMPLE_S = 2.0


def proc_status(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def disk_bytes(path: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_nothing_grows_under_a_steady_load(tern_factory, tmp_path):
    mosq = Mosquitto(tmp_path / "mq").start()
    rule = {"filter": "sensors/+/t", "topic": "sensors", "key": "{1}"}
    budget = 8 << 20
    tern = tern_factory(config=bridge_config(mosq, inbound=[rule])
                        + f"[storage]\nretention_check_interval_ms = 500\nmax_bytes = {budget}\n"
                        + '[topic_defaults]\n"segment.bytes" = 262144\n"retention.bytes" = 2097152\n')
    stop = threading.Event()
    counts = {"mqtt": 0, "kafka": 0, "read": 0}
    errors = []

    def guard(fn):
        def run():
            try:
                fn()
            except Exception as e:  # a dead load thread must fail the test, not hide
                errors.append(f"{fn.__name__}: {e!r}")
        return run

    def sensors():
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="soak-sensors", clean_session=True)
        client.max_inflight_messages_set(1000)
        client.connect("127.0.0.1", mosq.port, keepalive=30)
        client.loop_start()
        while not stop.is_set():
            for i in range(100):
                client.publish(f"sensors/dev-{i}/t", os.urandom(64).hex(), qos=1)
            counts["mqtt"] += 100
            time.sleep(0.1)
        client.loop_stop()
        client.disconnect()

    def events():
        p = Producer({"bootstrap.servers": tern.bootstrap, "acks": "all", "linger.ms": 5, "compression.type": "lz4"})
        while not stop.is_set():
            for _ in range(200):
                p.produce("events", value=os.urandom(300))
            counts["kafka"] += 200
            p.poll(0)
            time.sleep(0.05)
        p.flush(10)

    def reader():
        c = Consumer({"bootstrap.servers": tern.bootstrap, "group.id": "soak", "auto.offset.reset": "earliest",
                      "enable.auto.commit": True, "auto.commit.interval.ms": 1000})
        c.subscribe(["sensors", "events"])
        while not stop.is_set():
            counts["read"] += len([m for m in c.consume(500, timeout=0.2) if m.error() is None])
        c.close()

    threads = [threading.Thread(target=guard(f)) for f in (sensors, events, reader)]
    samples = []
    try:
        for t in threads:
            t.start()
        time.sleep(15)  # warm-up: topics, segments and the group settle; retention starts
        pid = tern.pid()
        deadline = time.time() + SOAK_S
        while time.time() < deadline:
            samples.append({"rss": proc_status(pid, "VmRSS"), "threads": proc_status(pid, "Threads"),
                            "fds": len(os.listdir(f"/proc/{pid}/fd")), "disk": disk_bytes(tern.data_dir)})
            time.sleep(SAMPLE_S)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        mosq.stop()
    assert not errors, errors
    assert counts["read"] > 0 and counts["mqtt"] > 0 and counts["kafka"] > 0, counts
    quarter = max(1, len(samples) // 4)
    first, last = samples[:quarter], samples[-quarter:]

    def level(rows, key):
        return statistics.median(r[key] for r in rows)

    report = {k: (level(first, k), level(last, k), max(r[k] for r in samples)) for k in ("rss", "fds", "threads", "disk")}
    print(f"\nsoak {SOAK_S:.0f} s: {counts['mqtt']} MQTT messages, {counts['kafka']} records produced, "
          f"{counts['read']} read; first quarter -> last quarter (max): "
          + ", ".join(f"{k} {a:.0f} -> {b:.0f} ({m:.0f})" for k, (a, b, m) in report.items()))
    rss0, rss1, _ = report["rss"]
    assert rss1 <= rss0 * 1.25 + 4096, f"RSS grew from {rss0} to {rss1} KiB"
    fds0, fds1, _ = report["fds"]
    assert fds1 <= fds0 + 8, f"open file descriptors grew from {fds0} to {fds1}"
    th0, th1, _ = report["threads"]
    assert th1 <= th0 + 4, f"threads grew from {th0} to {th1}"
    assert report["disk"][2] <= budget + (2 << 20), f"disk use {report['disk'][2]} past the {budget} budget"
