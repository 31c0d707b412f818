"""Pull the plug on a hub: its data directory on powercut-fs (tests/powercut), an edge
mirroring into it under load. Each cycle kills the hub with SIGKILL and cuts the power
(everything unsynced lost, or a torn prefix of it kept), mounts again and restarts the hub.

Checked after every cut: every batch the hub had acknowledged to the edge is still on the
hub (its log ends at or past what the edge saw acknowledged). At the end the copy equals
the edge's log record by record: no gap, no duplicate, same offsets.

The same with the plug pulled on the edge instead: the edge sends only what it has
fsynced, so after a cut the hub never holds a record the edge lost (which would stop the
partition as "logs disagree"), and the copy ends identical.

MIRROR_POWERCUT_CYCLES sets the number of cuts (default 10, alternating clean and torn)."""

import os
import random
import threading
import time

from confluent_kafka import Producer

from harness import Tern
from mirror_site import (Certs, assert_identical, caught_up, create_topic, edge_config, free_udp_port,
                         hub_config, mirror_status, start_edge, start_hub, wait_until, watermarks)
from test_power_cut import PowerCutFs

CYCLES = int(os.environ.get("MIRROR_POWERCUT_CYCLES", "10"))
PARTITIONS = 3


def acknowledged(edge) -> dict:
    """The hub's end per partition as the edge last saw it acknowledged."""
    parts = mirror_status(edge)["edge"]["partitions"]
    return {p: parts[f"sensors/{p}"]["hub_end"] for p in range(PARTITIONS) if f"sensors/{p}" in parts}


def test_batches_the_hub_acknowledged_survive_power_cuts(tmp_path):
    fs = PowerCutFs(tmp_path / "backing", tmp_path / "mnt", tmp_path / "powercut-fs.log")
    certs = Certs(tmp_path / "certs")
    port = free_udp_port()
    hub = Tern(tmp_path / "hub", config=hub_config(certs, port) + '[topic_defaults]\n"segment.bytes" = 262144\n',
               name="hub")
    hub.quic_port = port
    hub.data_dir = tmp_path / "mnt" / "data"
    rng = random.Random(23)
    stop = threading.Event()
    edge = None
    checked = 0
    try:
        fs.mount(seed=1)
        hub.start(timeout=60)
        edge = start_edge(tmp_path, certs, "gw-1", hub.quic_port)
        create_topic(edge.bootstrap, "sensors", PARTITIONS)

        producer = threading.Thread(target=produce_until, args=(edge.bootstrap, stop))
        producer.start()
        for cycle in range(CYCLES):
            time.sleep(rng.uniform(1.0, 2.5))
            before = acknowledged(edge)
            hub.kill()
            torn = cycle % 2 == 1
            fs.cut(torn=torn)
            fs.mount(seed=cycle + 2)
            hub.start(timeout=60)  # must come up by itself after every cut
            after = {p: h for p, (_, h) in watermarks(hub.bootstrap, "gw-1.sensors").items()}
            for p, acked in before.items():
                assert after.get(p, 0) >= acked, \
                    f"cut {cycle} ({'torn' if torn else 'clean'}): partition {p} acknowledged up to {acked}, " \
                    f"hub holds {after.get(p)} after the cut"
                checked += 1
        stop.set()
        producer.join(timeout=60)
        wait_until(lambda: caught_up(edge, hub, "gw-1", ["sensors"]), 120, "the hub to catch up")
        total = assert_identical(edge, hub, "gw-1", ["sensors"])
        hub_edge = mirror_status(hub)["hub"]["edges"]["gw-1"]["partitions"]
        assert all(p["gap_records"] == 0 for p in hub_edge.values()), hub_edge
        print(f"\nhub power cuts: {CYCLES} ({(CYCLES + 1) // 2} clean, {CYCLES // 2} torn); {checked} acknowledged "
              f"positions held; {total} records identical at the end")
    finally:
        stop.set()
        if edge is not None:
            edge.kill()
        hub.kill()
        fs.unmount()


def test_power_cuts_on_the_edge_never_leave_the_hub_ahead(tmp_path):
    fs = PowerCutFs(tmp_path / "backing", tmp_path / "mnt", tmp_path / "powercut-fs.log")
    certs = Certs(tmp_path / "certs")
    hub = start_hub(tmp_path, certs)
    edge = Tern(tmp_path / "gw-1", config=edge_config(certs, "gw-1", hub.quic_port)
                + '[topic_defaults]\n"segment.bytes" = 262144\n', name="gw-1")
    edge.data_dir = tmp_path / "mnt" / "data"
    rng = random.Random(29)
    cycles = max(2, CYCLES // 2)
    try:
        fs.mount(seed=1)
        edge.start(timeout=60)
        create_topic(edge.bootstrap, "sensors", PARTITIONS)
        for cycle in range(cycles):
            stop = threading.Event()
            producer = threading.Thread(target=produce_until, args=(edge.bootstrap, stop))
            producer.start()
            time.sleep(rng.uniform(1.0, 2.5))
            edge.kill()
            stop.set()
            producer.join(timeout=60)
            fs.cut(torn=cycle % 2 == 1)
            fs.mount(seed=cycle + 2)
            edge.start(timeout=60)
            mine = {p: h for p, (_, h) in watermarks(edge.bootstrap, "sensors").items()}
            theirs = {p: h for p, (_, h) in watermarks(hub.bootstrap, "gw-1.sensors").items()}
            for p, end in theirs.items():
                assert end <= mine.get(p, 0), f"cut {cycle}: the hub holds {end} of partition {p}, the edge {mine.get(p)}"
        wait_until(lambda: caught_up(edge, hub, "gw-1", ["sensors"]), 120, "the hub to catch up")
        total = assert_identical(edge, hub, "gw-1", ["sensors"])
        assert "logs disagree" not in edge.log_text() and "was a data directory replaced" not in edge.log_text()
        print(f"\nedge power cuts: {cycles}; the hub was never ahead; {total} records identical at the end")
    finally:
        edge.kill()
        hub.kill()
        fs.unmount()


def produce_until(bootstrap: str, stop: threading.Event):
    """librdkafka load on the edge until `stop` (failures after its kill are expected)."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "compression.type": "lz4",
                  "message.timeout.ms": 5000})
    i = 0
    while not stop.is_set():
        try:
            p.produce("sensors", key=f"s-{i % 31}".encode(), value=f'{{"seq":{i}}}'.encode())
        except BufferError:
            p.poll(0.05)
            continue
        p.poll(0)
        i += 1
        if i % 500 == 0:
            time.sleep(0.01)
    p.flush(5)
