"""SD-card wear at a typical gateway load: what tern writes to the device per record and how
often it fsyncs, so a user can estimate a card's life.

The load: 200 sensors publishing one MQTT message per second each (QoS 1, through the
bridge into `sensors`), one camera event stream (librdkafka, acks=all, 5 events/s of ~1 kB
into `camera-events`), and one consumer group reading both and committing every 5 s.
Measured over the run: bytes tern caused to be written to the block device
(`write_bytes` of /proc/<pid>/io — page-granular, after the page cache: what reaches the
card, before its own FTL), fsync rounds (tern's group-commit histogram) and records.

    apt-get install mosquitto
    cargo build --release
    python3 tests/bench/wear_bench.py [--seconds 120]

Prints figures; asserts nothing. Record them in docs/BENCHMARKS.md.
"""

import argparse
import pathlib
import re
import sys
import tempfile
import threading
import time

import paho.mqtt.client as mqtt
from confluent_kafka import Consumer, Producer

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))

from harness import Tern  # noqa: E402
from mosquitto import Mosquitto, bridge_config  # noqa: E402

SENSORS = 200


def io_write_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/<pid>/io")


def metric(tern: Tern, name: str) -> float:
    found = re.search(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)", tern.metrics(), re.M)
    return float(found.group(1)) if found else 0.0


def sensors(port: int, stop: threading.Event, sent: list):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sensors", clean_session=True)
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    tick = time.time()
    while not stop.is_set():
        for i in range(SENSORS):
            client.publish(f"sensors/dev-{i}/t", f'{{"t":{20 + i % 7}.{i % 10},"ts":{int(time.time() * 1000)}}}', qos=1)
        sent[0] += SENSORS
        tick += 1.0
        time.sleep(max(0.0, tick - time.time()))
    client.loop_stop()
    client.disconnect()


def cameras(bootstrap: str, stop: threading.Event, sent: list):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    i = 0
    while not stop.is_set():
        p.produce("camera-events", key=f"cam-{i % 4}".encode(),
                  value=(f'{{"camera":"cam-{i % 4}","event":"motion","seq":{i},"box":[' + "1," * 240 + "1]}").encode())
        p.poll(0)
        i += 1
        sent[0] += 1
        time.sleep(0.2)
    p.flush(10)


def consumer(bootstrap: str, stop: threading.Event, seen: list):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "dashboard", "auto.offset.reset": "earliest",
                  "enable.auto.commit": True, "auto.commit.interval.ms": 5000})
    c.subscribe(["sensors", "camera-events"])
    while not stop.is_set():
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            seen[0] += 1
    c.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=120)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        mosq = Mosquitto(tmp / "mq").start()
        rule = {"filter": "sensors/+/t", "topic": "sensors", "key": "{1}"}
        tern = Tern(tmp / "tern", config=bridge_config(mosq, inbound=[rule])).start()
        stop = threading.Event()
        sent_mqtt, sent_cam, seen = [0], [0], [0]
        threads = [threading.Thread(target=sensors, args=(mosq.port, stop, sent_mqtt)),
                   threading.Thread(target=cameras, args=(tern.bootstrap, stop, sent_cam)),
                   threading.Thread(target=consumer, args=(tern.bootstrap, stop, seen))]
        try:
            for t in threads:
                t.start()
            time.sleep(10)  # warm up: topics created, group joined
            w0, f0, t0 = io_write_bytes(tern.pid()), metric(tern, "tern_fsync_duration_seconds_count"), time.time()
            r0 = sent_mqtt[0] + sent_cam[0]
            time.sleep(args.seconds)
            w1, f1, t1 = io_write_bytes(tern.pid()), metric(tern, "tern_fsync_duration_seconds_count"), time.time()
            r1 = sent_mqtt[0] + sent_cam[0]
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
            tern.stop()
            mosq.stop()
        secs = t1 - t0
        records = r1 - r0
        written = w1 - w0
        per_day = written / secs * 86400
        print(f"load: {SENSORS} MQTT sensors at 1 Hz + camera events at 5/s + one consumer group; {secs:.0f} s")
        print(f"records stored: {records} ({records / secs:.0f}/s); consumer read {seen[0]}")
        print(f"bytes written to the device: {written} = {written / records:.0f} B per record, "
              f"{written / secs / 1024:.1f} KiB/s, {per_day / 1e9:.2f} GB/day")
        print(f"fsync rounds: {f1 - f0:.0f} = {(f1 - f0) / secs:.1f} per second")
        card_tb = 32e9 * 1000 / 1e12
        print(f"a 32 GB card rated for 1,000 write cycles absorbs ~{card_tb:.0f} TB: "
              f"{card_tb * 1e12 / per_day / 365:.0f} years at this rate, before the card's own write amplification")


if __name__ == "__main__":
    main()
