"""A mirror setup for end-to-end tests: a CA and certificates made with `tern certs`, a hub
and edges as real tern processes on loopback, and helpers that read whole topics through
the Kafka protocol (librdkafka) to compare an edge's log with the hub's copy."""

import contextlib
import json
import pathlib
import socket
import subprocess
import time
import urllib.request

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from harness import TERN_BIN, Tern


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tern_cli(*args: str) -> str:
    done = subprocess.run([TERN_BIN, *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"tern {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done.stdout


class Certs:
    """A CA in `dir`, the hub's certificate, and edge certificates on demand."""

    def __init__(self, dir: pathlib.Path):
        self.dir = pathlib.Path(dir)
        tern_cli("certs", "ca", "--dir", str(self.dir))
        tern_cli("certs", "hub", "--dir", str(self.dir), "--name", "localhost", "--name", "127.0.0.1")

    def edge(self, name: str) -> tuple:
        if not (self.dir / f"{name}.pem").exists():
            tern_cli("certs", "edge", name, "--dir", str(self.dir))
        return self.dir / f"{name}.pem", self.dir / f"{name}.key"


def hub_config(certs: Certs, quic_port: int, extra: str = "") -> str:
    return f"""
[hub]
listen = "127.0.0.1:{quic_port}"
cert = "{certs.dir / 'hub.pem'}"
key = "{certs.dir / 'hub.key'}"
ca = "{certs.dir / 'ca.pem'}"
{extra}
"""


def edge_config(certs: Certs, name: str, hub_port: int, cert_name: str = None, ca: pathlib.Path = None,
                extra: str = "") -> str:
    cert, key = certs.edge(cert_name or name)
    return f"""
[mirror]
hub = "127.0.0.1:{hub_port}"
hub_name = "localhost"
name = "{name}"
cert = "{cert}"
key = "{key}"
ca = "{ca or certs.dir / 'ca.pem'}"
reconnect_min_ms = 100
reconnect_max_ms = 1000
discovery_interval_ms = 500
{extra}
"""


def start_hub(workdir: pathlib.Path, certs: Certs, name: str = "hub", extra: str = "") -> Tern:
    port = free_udp_port()
    hub = Tern(workdir / name, config=hub_config(certs, port, extra), name=name)
    hub.quic_port = port
    return hub.start()


def start_edge(workdir: pathlib.Path, certs: Certs, name: str, hub_port: int, **kw) -> Tern:
    edge = Tern(workdir / name, config=edge_config(certs, name, hub_port, **kw), name=name)
    return edge.start()


@contextlib.contextmanager
def mirror_pair(workdir: pathlib.Path, **edge_kw):
    """A CA, a hub and an edge `gw-1` mirroring into it; both are killed afterwards."""
    certs = Certs(workdir / "certs")
    hub = start_hub(workdir, certs)
    edge = None
    try:
        edge = start_edge(workdir, certs, "gw-1", hub.quic_port, **edge_kw)
        yield certs, hub, edge
    finally:
        if edge is not None:
            edge.kill()
        hub.kill()


def status_text(tern: Tern) -> str:
    """What `tern mirror status` prints for this tern."""
    done = subprocess.run([TERN_BIN, "mirror", "status", "--http", f"127.0.0.1:{tern.http_port}"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def mirror_status(tern: Tern) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{tern.http_port}/v1/mirror", timeout=10) as r:
        return json.loads(r.read())


def create_topic(bootstrap: str, name: str, partitions: int, configs: dict = None):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                            config=configs or {})])
    futures[name].result(timeout=30)


def add_partitions(bootstrap: str, name: str, total: int):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_partitions([NewPartitions(name, total)])[name].result(timeout=30)


def produce(bootstrap: str, topic: str, count: int, codec: str = "lz4", start: int = 0, headers: bool = True):
    """`count` keyed records with headers and explicit timestamps; returns how many were
    acknowledged (all of them, or the test fails)."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                         "compression.type": codec, "enable.idempotence": True,
                         "message.timeout.ms": 120_000})
    failed = []

    def on_delivery(err, msg):
        if err is not None:
            failed.append(str(err))

    base_ts = 1_767_225_600_000
    for i in range(start, start + count):
        value = json.dumps({"device": f"sensor-{i % 97}", "seq": i, "temp": 20 + i % 13}).encode()
        hdrs = [("source", b"edge"), ("seq", str(i).encode())] if headers else None
        while True:
            try:
                producer.produce(topic, key=f"sensor-{i % 97}".encode(), value=value, headers=hdrs,
                                 timestamp=base_ts + i, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(120)
    assert remaining == 0, f"{remaining} records of {topic} not delivered"
    assert not failed, f"delivery failures on {topic}: {failed[:3]}"
    return count


def watermarks(bootstrap: str, topic: str) -> dict:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "wm", "enable.auto.commit": False})
    try:
        meta = c.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return {}
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in meta.partitions}
    finally:
        c.close()


def read_all(bootstrap: str, topic: str) -> dict:
    """Every record of every partition: {partition: [(offset, key, value, headers, ts)]}."""
    marks = watermarks(bootstrap, topic)
    out = {}
    for partition, (low, high) in sorted(marks.items()):
        records = []
        if high > low:
            c = Consumer({"bootstrap.servers": bootstrap, "group.id": "read-all", "enable.auto.commit": False,
                          "fetch.max.bytes": 8 << 20, "max.partition.fetch.bytes": 4 << 20})
            c.assign([TopicPartition(topic, partition, low)])
            deadline = time.time() + 300
            while time.time() < deadline:
                batch = c.consume(10_000, timeout=1)
                for m in batch:
                    if m.error() is not None:
                        continue
                    records.append((m.offset(), m.key(), m.value(), tuple(m.headers() or ()), m.timestamp()[1]))
                if records and records[-1][0] >= high - 1:
                    break
            c.close()
        out[partition] = records
    return out


def wait_until(predicate, timeout: float, what: str, interval: float = 0.25):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def caught_up(edge: Tern, hub: Tern, edge_name: str, topics: list) -> bool:
    """True when the hub's high watermarks equal the edge's for every partition."""
    for topic in topics:
        mine = watermarks(edge.bootstrap, topic)
        theirs = watermarks(hub.bootstrap, f"{edge_name}.{topic}")
        if not mine or {p: h for p, (_, h) in mine.items()} != {p: h for p, (_, h) in theirs.items()}:
            return False
    return True


def assert_identical(edge: Tern, hub: Tern, edge_name: str, topics: list) -> int:
    """Compares every record of the edge's topics with the hub's copies; returns the count."""
    total = 0
    for topic in topics:
        mine = read_all(edge.bootstrap, topic)
        theirs = read_all(hub.bootstrap, f"{edge_name}.{topic}")
        assert sorted(mine) == sorted(theirs), f"{topic}: partitions {sorted(mine)} vs {sorted(theirs)}"
        for p in mine:
            a, b = mine[p], theirs[p]
            assert len(a) == len(b), f"{topic}-{p}: edge has {len(a)} records, hub {len(b)}"
            for x, y in zip(a, b):
                assert x == y, f"{topic}-{p} differs at offset {x[0]}: edge {x!r} hub {y!r}"
            offsets = [r[0] for r in b]
            assert len(set(offsets)) == len(offsets), f"{topic}-{p}: duplicate offsets on the hub"
            total += len(a)
    return total
