"""Pull the plug: tern runs with its data directory on powercut-fs (tests/powercut), a
FUSE file system that keeps every write not yet fsynced in a volatile journal. Each cycle
puts load on tern (idempotent librdkafka producers with acks=all, synchronous offset
commits, MQTT devices through the bridge), kills tern with SIGKILL and cuts the power:
everything unsynced is lost (clean cut) or a random prefix of it survives, torn at a byte
(torn cut). Then the file system is mounted again and tern must start by itself.

Checked after every cut: every acknowledged record is at the offset it was acknowledged
with (nothing lost, no offset reused) exactly once; every acknowledged offset commit is
still committed; and at the end every MQTT message mosquitto accepted reached tern.

POWERCUT_CYCLES sets the number of cuts (default 50, half of each kind):
    POWERCUT_CYCLES=500 python3 -m pytest -q tests/e2e/test_power_cut.py
"""

import collections
import os
import pathlib
import random
import signal
import subprocess
import sys
import threading
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from harness import ROOT, Tern
from mosquitto import Mosquitto, bridge_config, wait_subscribed

HERE = pathlib.Path(__file__).resolve().parent
POWERCUT_BIN = os.environ.get("POWERCUT_BIN", str(ROOT / "target" / "release" / "powercut-fs"))
CYCLES = int(os.environ.get("POWERCUT_CYCLES", "50"))
PARTITIONS = 3


class PowerCutFs:
    """One mount of powercut-fs over `backing` at `mountpoint`."""

    def __init__(self, backing: pathlib.Path, mountpoint: pathlib.Path, log: pathlib.Path):
        if not os.path.exists(POWERCUT_BIN):
            raise RuntimeError(f"{POWERCUT_BIN} missing: cargo build --release -p powercut-fs")
        if not os.path.exists("/dev/fuse"):
            raise RuntimeError("/dev/fuse is missing: power-cut tests need FUSE")
        self.backing, self.mountpoint, self.log = backing, mountpoint, log
        backing.mkdir(parents=True, exist_ok=True)
        mountpoint.mkdir(parents=True, exist_ok=True)
        self.proc = None

    def mount(self, seed: int):
        out = open(self.log, "a")
        env = {**os.environ, "POWERCUT_SEED": str(seed)}
        self.proc = subprocess.Popen([POWERCUT_BIN, str(self.backing), str(self.mountpoint)],
                                     stdout=out, stderr=out, env=env)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"powercut-fs exited: {self.log.read_text()[-2000:]}")
            if any(line.split()[1] == str(self.mountpoint) for line in open("/proc/mounts")):
                return
            time.sleep(0.02)
        raise RuntimeError(f"powercut-fs did not mount: {self.log.read_text()[-2000:]}")

    def cut(self, torn: bool):
        """Power cut: unmount, dropping unsynced writes (all of them, or torn)."""
        self.proc.send_signal(signal.SIGUSR2 if torn else signal.SIGUSR1)
        code = self.proc.wait(timeout=60)
        if code != 0:
            raise RuntimeError(f"powercut-fs failed with {code}: {self.log.read_text()[-2000:]}")

    def unmount(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)


class Load:
    """Idempotent producers, a committer and an MQTT publisher, run in threads during one
    cycle; records only what tern (or mosquitto) acknowledged."""

    def __init__(self, bootstrap: str, cycle: int, mosq_port: int, failures: list):
        self.bootstrap, self.cycle, self.failures = bootstrap, cycle, failures
        self.mosq_port = mosq_port
        self.acked = []  # (partition, offset, value)
        self.commits = {}  # partition -> highest acknowledged committed offset
        self.mqtt_acked = set()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.guard(self.produce), args=(i,), daemon=True) for i in range(2)]
        self.threads.append(threading.Thread(target=self.guard(self.commit), daemon=True))
        self.threads.append(threading.Thread(target=self.guard(self.publish), daemon=True))

    def guard(self, fn):
        def run(*args):
            try:
                fn(*args)
            except Exception as e:  # surfaced by the main thread
                self.failures.append(f"cycle {self.cycle} {fn.__name__}: {e!r}")
        return run

    def produce(self, index: int):
        p = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "acks": "all",
                      "linger.ms": 2, "message.timeout.ms": 30000, "reconnect.backoff.max.ms": 200})
        n = 0

        def delivered(err, msg):
            if err is None:
                self.acked.append((msg.partition(), msg.offset(), msg.value().decode()))

        while not self.stop.is_set():
            value = f"c{self.cycle}-p{index}-{n}"
            try:
                p.produce("events", value=value, key=str(n % 17), on_delivery=delivered)
                n += 1
            except BufferError:
                p.poll(0.01)
            p.poll(0)
            if n % 10 == 0:
                time.sleep(0.003)  # a few thousand records/s: verification stays quick
        # tern is dead now: whatever was not acknowledged stays unacknowledged.
        p.poll(0)
        p.purge()
        p.flush(0)

    def commit(self):
        def committed(err, partitions):
            # Called for acknowledged (or failed) commits; only successes count.
            if err is not None:
                return
            for tp in partitions:
                if tp.error is None and tp.offset >= 0:
                    self.commits[tp.partition] = max(self.commits.get(tp.partition, 0), tp.offset)

        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "committer",
                      "enable.auto.commit": False, "auto.offset.reset": "earliest",
                      "reconnect.backoff.max.ms": 200, "on_commit": committed})
        c.assign([TopicPartition("events", p) for p in range(PARTITIONS)])
        positions = {}
        while not self.stop.is_set():
            for m in c.consume(200, timeout=0.1):
                if not m.error():
                    positions[m.partition()] = m.offset() + 1
            if positions:
                c.commit(offsets=[TopicPartition("events", p, o) for p, o in positions.items()],
                         asynchronous=True)
        c.poll(0)
        self.consumer = c  # closed once tern is back

    def publish(self):
        import paho.mqtt.client as mqtt
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"device-{self.cycle}", clean_session=True)
        client.connect("127.0.0.1", self.mosq_port, keepalive=30)
        client.loop_start()
        pending = []
        n = 0
        while not self.stop.is_set():
            payload = f"m{self.cycle}-{n}"
            pending.append((payload, client.publish(f"sensors/dev-{n % 5}/t", payload, qos=1)))
            n += 1
            time.sleep(0.005)
        deadline = time.time() + 10
        for payload, info in pending:
            while not info.is_published() and time.time() < deadline:
                time.sleep(0.005)
            if info.is_published():
                self.mqtt_acked.add(payload)
        client.loop_stop()
        client.disconnect()

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)
            assert not t.is_alive(), "a load thread hung"


def read_topic(bootstrap: str, topic: str) -> dict:
    """(partition, offset) -> value for every record up to each high watermark."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "verifier", "enable.auto.commit": False})
    try:
        partitions = list(c.list_topics(topic, timeout=10).topics[topic].partitions)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
        c.assign([TopicPartition(topic, p, 0) for p in partitions])
        out = {}
        position = {p: 0 for p in partitions}
        deadline = time.time() + 120
        while any(position[p] < end for p, end in ends.items()):
            assert time.time() < deadline, f"could not read {topic} to its end {ends}"
            for m in c.consume(5000, timeout=0.5):
                if m.error() is None:
                    out[(m.partition(), m.offset())] = m.value().decode()
                    position[m.partition()] = max(position[m.partition()], m.offset() + 1)
        return out
    finally:
        c.close()


def committed(bootstrap: str) -> dict:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "committer", "enable.auto.commit": False})
    try:
        tps = c.committed([TopicPartition("events", p) for p in range(PARTITIONS)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def test_acknowledged_data_survives_power_cuts(tmp_path):
    mosq = Mosquitto(tmp_path / "mosquitto").start()
    fs = PowerCutFs(tmp_path / "backing", tmp_path / "mnt", tmp_path / "powercut-fs.log")
    rule = {"filter": "sensors/+/t", "topic": "sensors", "key": "{1}"}
    tern = Tern(tmp_path / "tern", config=bridge_config(mosq, inbound=[rule], extra="reconnect_max_ms = 300")
                + "\n[kafka]\ndefault_partitions = 3\n"
                + '[topic_defaults]\n"segment.bytes" = 262144\n')  # segments roll during the run
    tern.data_dir = tmp_path / "mnt" / "data"
    rng = random.Random(17)
    acked, commits, mqtt_acked, failures = [], {}, set(), []
    cuts = {"clean": 0, "torn": 0}
    try:
        for cycle in range(CYCLES):
            fs.mount(seed=cycle + 1)
            tern.start(timeout=60)  # must come up by itself after every cut
            if cycle == 0:
                # mosquitto queues messages for the bridge only once its session exists:
                # what is published before the first SUBSCRIBE goes to nobody.
                wait_subscribed(tern)
            if cycle > 0:
                verify(tern.bootstrap, acked, commits, cycle)
            load = Load(tern.bootstrap, cycle, mosq.port, failures)
            load.start()
            time.sleep(rng.uniform(1.0, 2.0))
            tern.kill()
            torn = cycle % 2 == 1
            fs.cut(torn=torn)
            cuts["torn" if torn else "clean"] += 1
            load.finish()
            acked += load.acked
            for p, o in load.commits.items():
                commits[p] = max(commits.get(p, 0), o)
            mqtt_acked |= load.mqtt_acked
            assert not failures, failures
        fs.mount(seed=0)
        tern.start(timeout=60)
        verify(tern.bootstrap, acked, commits, CYCLES)
        # Every MQTT message mosquitto accepted reaches tern (redelivered after cuts).
        deadline = time.time() + 120
        while True:
            got = set(read_topic(tern.bootstrap, "sensors").values())
            missing = mqtt_acked - got
            if not missing:
                break
            assert time.time() < deadline, f"{len(missing)} MQTT messages never reached tern, e.g. {sorted(missing)[:5]}"
            time.sleep(1)
        print(f"\npower cuts: {cuts}, acknowledged records {len(acked)}, MQTT messages {len(mqtt_acked)}, "
              f"commits {commits}")
        assert cuts["clean"] + cuts["torn"] == CYCLES
        assert len(acked) > CYCLES * 50, "the load acknowledged too little to mean anything"
    finally:
        tern.kill()
        fs.unmount()
        mosq.stop()


def verify(bootstrap, acked, commits, cycle):
    stored = read_topic(bootstrap, "events")
    for partition, offset, value in acked:
        got = stored.get((partition, offset))
        assert got == value, f"after cut {cycle}: acknowledged {value} at {partition}/{offset}, found {got!r}"
    counts = collections.Counter(stored.values())
    duplicated = [v for _, _, v in acked if counts[v] > 1]
    assert not duplicated, f"after cut {cycle}: acknowledged records stored twice: {duplicated[:5]}"
    now = committed(bootstrap)
    for p, o in commits.items():
        assert now.get(p, -1) >= o, f"after cut {cycle}: partition {p} committed {o}, now {now.get(p)}"
