"""The real Burrow against tern: Debian's burrow (LinkedIn's Burrow 1.2.1, sarama inside —
the fourth client family) with Debian's ZooKeeper for its own coordination, on loopback
ports, configured with tern as its Kafka cluster. Burrow reads tern's __consumer_offsets
(Kafka's record format, lz4 batches), asks for log ends with ListOffsets v0, and must
report the same lag and status for a group as tern's own evaluator."""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from harness import Tern, free_port

ZOOKEEPER_JARS = ["/usr/share/java/zookeeper.jar", "/usr/share/java/zookeeper-jute.jar"]


def start_zookeeper(workdir: pathlib.Path) -> tuple:
    for jar in ZOOKEEPER_JARS:
        assert os.path.exists(jar), f"{jar} missing: apt-get install zookeeper (tests/run does)"
    port = free_port()
    (workdir / "zk").mkdir(parents=True)
    cfg = workdir / "zoo.cfg"
    cfg.write_text(f"tickTime=2000\ndataDir={workdir / 'zk'}\nclientPort={port}\n"
                   "clientPortAddress=127.0.0.1\nadmin.enableServer=false\n")
    log = open(workdir / "zookeeper.log", "w")
    proc = subprocess.Popen(["java", "-Xmx128m", "-cp", ":".join(ZOOKEEPER_JARS),
                             "org.apache.zookeeper.server.ZooKeeperServerMain", str(cfg)],
                            stdout=log, stderr=log)
    # Serving, not just listening: the `srvr` four-letter word answers once it is up.
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"srvr")
                if b"Zookeeper version" in s.recv(4096):
                    return proc, port
        except OSError:
            pass
        assert proc.poll() is None, (workdir / "zookeeper.log").read_text()
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("ZooKeeper did not listen within 60 s")


@pytest.fixture
def site(tmp_path):
    burrow_bin = shutil.which("Burrow")
    assert burrow_bin, "Burrow missing: apt-get install burrow (tests/run does)"
    tern = Tern(tmp_path / "tern", config="""
[lag]
window = 10
min_distance_ms = 1000
sample_interval_ms = 200
""")
    tern.start()
    zk, zk_port = start_zookeeper(tmp_path)
    http_port = free_port()
    conf = tmp_path / "burrow"
    conf.mkdir()
    (conf / "burrow.toml").write_text(f"""
[general]
pidfile="{conf / 'burrow.pid'}"
[logging]
filename="{conf / 'burrow.log'}"
level="info"
[zookeeper]
servers=["127.0.0.1:{zk_port}"]
timeout=6
root-path="/burrow"
[client-profile.tern]
client-id="burrow"
kafka-version="2.0.0"
[cluster.tern]
class-name="kafka"
servers=["{tern.bootstrap}"]
client-profile="tern"
topic-refresh=5
offset-refresh=1
[consumer.tern]
class-name="kafka"
cluster="tern"
servers=["{tern.bootstrap}"]
client-profile="tern"
start-latest=false
[evaluator.default]
class-name="caching"
expire-cache=1
[httpserver.default]
address="127.0.0.1:{http_port}"
[storage.default]
class-name="inmemory"
workers=2
intervals=10
expire-group=604800
min-distance=1
""")
    burrow = subprocess.Popen([burrow_bin, "--config-dir", str(conf)], stdout=open(conf / "out.log", "w"),
                              stderr=subprocess.STDOUT)
    tern.burrow_url = f"http://127.0.0.1:{http_port}"
    tern.burrow_dir = conf
    yield tern
    burrow.kill()
    zk.kill()
    tern.kill()


def fetch(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def burrow_lag(site, group):
    try:
        return fetch(f"{site.burrow_url}/v3/kafka/tern/consumer/{group}/lag")["status"]
    except OSError:
        return None


def tern_lag(site, group):
    return fetch(f"http://127.0.0.1:{site.http_port}/v1/groups/{group}")["lag"]


def test_burrow_reports_what_tern_reports(site):
    producer = Producer({"bootstrap.servers": site.bootstrap})
    for i in range(1000):
        producer.produce("readings", value=json.dumps({"n": i}).encode())
    assert producer.flush(30) == 0

    # Burrow computes each commit's lag from the log ends it knows: wait until it knows
    # this topic's (it asks tern with ListOffsets v0).
    deadline, topic = time.time() + 30, None
    while time.time() < deadline:
        try:
            topic = fetch(f"{site.burrow_url}/v3/kafka/tern/topic/readings")
            if topic.get("offsets") == [1000]:
                break
        except OSError:
            pass
        time.sleep(0.5)
    assert topic and topic.get("offsets") == [1000], topic

    # A live group: commits 100, 200, ... 600, a little over a second apart (both keep
    # each as a sample), its lag shrinking from 900 to 400.
    consumer = Consumer({"bootstrap.servers": site.bootstrap, "group.id": "dash", "enable.auto.commit": False})
    for offset in range(100, 700, 100):
        consumer.commit(offsets=[TopicPartition("readings", 0, offset)], asynchronous=False)
        time.sleep(1.1)

    deadline, burrow = time.time() + 30, None
    while time.time() < deadline:
        burrow = burrow_lag(site, "dash")
        if burrow and burrow["partition_count"] == 1 and burrow["partitions"][0]["end"]["offset"] == 600 \
                and burrow["totallag"] == 400:
            break
        time.sleep(0.5)
    log = (site.burrow_dir / "burrow.log").read_text()
    assert burrow and burrow["totallag"] == 400, f"{burrow}\n{log[-4000:]}"
    ours = tern_lag(site, "dash")
    assert ours["total_lag"] == 400 and ours["partitions"][0]["committed"] == 600
    # Burrow kept the same window, and judges it the same way.
    assert burrow["partitions"][0]["start"]["offset"] == ours["partitions"][0]["window"][0]["offset"]
    assert burrow["status"] == ours["status"] == "OK", (burrow, ours)
    assert burrow["partitions"][0]["status"] == ours["partitions"][0]["status"] == "OK"

    # It stops committing: once the silence outlasts the window, both say STOP (group ERR).
    time.sleep(7)
    burrow, ours = burrow_lag(site, "dash"), tern_lag(site, "dash")
    assert burrow["status"] == ours["status"] == "ERR", json.dumps([burrow, ours])
    assert burrow["partitions"][0]["status"] == ours["partitions"][0]["status"] == "STOP"
    consumer.close()

