"""Mirroring under abuse: random kill -9 of the hub and the edge while records flow, and a
bad WAN link (delay, loss, a 30 s blackhole, a new source port). At the end the hub's copy
equals the edge's log exactly: no duplicate, no gap, same offsets."""

import os
import random
import threading
import time

from confluent_kafka import Producer

from harness import Tern
from mirror_site import (Certs, assert_identical, caught_up, create_topic, edge_config, mirror_pair,
                         mirror_status, start_hub, wait_until)
from udp_proxy import UdpProxy

KILLS = int(os.environ.get("MIRROR_CHAOS_KILLS", "20"))
BLACKHOLE_S = float(os.environ.get("MIRROR_BLACKHOLE_S", "30"))
TOPICS = {"sensors": 3, "doors": 1}


class Load:
    """librdkafka producers feeding the edge until stopped; errors while the edge is
    down are expected (what was not acknowledged may or may not be stored: the test
    compares logs, not acknowledgements)."""

    def __init__(self, edge: Tern, pause: float = 0.01):
        self.edge = edge
        self.pause = pause
        self.stop = threading.Event()
        self.produced = 0
        self.failures = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            producer = Producer({"bootstrap.servers": self.edge.bootstrap, "acks": "all", "linger.ms": 5,
                                 "compression.type": "lz4", "message.timeout.ms": 30_000,
                                 "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 200})
            i = 0
            while not self.stop.is_set():
                for topic in TOPICS:
                    try:
                        producer.produce(topic, key=f"k{i % 31}".encode(), value=f'{{"seq":{i}}}'.encode(),
                                         headers=[("seq", str(i).encode())])
                    except BufferError:
                        producer.poll(0.1)
                    i += 1
                producer.poll(0)
                if i % 100 == 0:
                    time.sleep(self.pause)
            producer.flush(60)
            self.produced = i
        except Exception as e:  # surfaced by the test
            self.failures.append(repr(e))

    def finish(self):
        self.stop.set()
        self.thread.join(timeout=120)
        assert not self.failures, self.failures


def test_random_kill_9_of_hub_and_edge_leaves_an_exact_copy(tmp_path):
    rng = random.Random(1234)
    with mirror_pair(tmp_path) as (certs, hub, edge):
        for topic, partitions in TOPICS.items():
            create_topic(edge.bootstrap, topic, partitions)
        load = Load(edge)
        kills = {"hub": 0, "edge": 0}
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.3, 1.5))
            victim_name = rng.choice(["hub", "edge"])
            victim = hub if victim_name == "hub" else edge
            victim.kill()
            kills[victim_name] += 1
            time.sleep(rng.uniform(0.0, 1.0))
            victim.start()
        load.finish()
        assert kills["hub"] > 0 and kills["edge"] > 0, kills
        wait_until(lambda: caught_up(edge, hub, "gw-1", list(TOPICS)), 180, "the hub to catch up after the kills")
        total = assert_identical(edge, hub, "gw-1", list(TOPICS))
        assert total > 1_000, f"only {total} records mirrored"
        print(f"chaos: {kills} kills, {total} records identical on both sides")


def test_a_bad_wan_link_converges_exactly_once_without_a_restart(tmp_path):
    certs = Certs(tmp_path / "certs")
    hub = start_hub(tmp_path, certs)
    proxy = UdpProxy(("127.0.0.1", hub.quic_port))
    edge = Tern(tmp_path / "gw-1", name="gw-1", config=edge_config(certs, "gw-1", proxy.port)).start()
    try:
        for topic, partitions in TOPICS.items():
            create_topic(edge.bootstrap, topic, partitions)
        wait_until(lambda: mirror_status(edge)["edge"]["state"] == "connected", 30, "the link")
        load = Load(edge, pause=0.05)
        # A slow, lossy link.
        proxy.impair(delay_ms=50, loss=0.10)
        time.sleep(15)
        # The link goes dark, then comes back through a new NAT mapping.
        proxy.impair(blackhole=True)
        time.sleep(BLACKHOLE_S)
        proxy.rebind()
        proxy.impair(delay_ms=50, loss=0.10)
        time.sleep(5)
        load.finish()
        proxy.impair()
        wait_until(lambda: caught_up(edge, hub, "gw-1", list(TOPICS)), 180, "convergence after the bad link")
        total = assert_identical(edge, hub, "gw-1", list(TOPICS))
        assert total > 1_000 and proxy.dropped > 0 and proxy.rebinds == 1
        status = mirror_status(edge)["edge"]
        hub_edge = mirror_status(hub)["hub"]["edges"]["gw-1"]
        print(f"bad link: {total} records identical, {proxy.dropped} packets dropped, "
              f"edge reconnects {status['reconnects']}, hub sees edge at {hub_edge['address']}")
        new_port = proxy.up.getsockname()[1]
        wait_until(lambda: mirror_status(hub)["hub"]["edges"]["gw-1"]["address"] == f"127.0.0.1:{new_port}", 10,
                   "the hub to follow the edge to its new address")
        # Both processes ran throughout: nothing was restarted to get here.
        assert edge.starts == 1 and hub.starts == 1
    finally:
        edge.kill()
        hub.kill()
        proxy.close()
