"""A hub whose disk fills up (a real, small tmpfs): the edge's batches are refused with a
retriable error the edge shows, nothing half-written is acknowledged or kept, and once
space returns the hub's copy completes — identical to the edge, no gap, no duplicate.
Needs root to mount; without it the test fails, it does not skip."""

import os
import subprocess

from confluent_kafka import Producer

from mirror_site import (Certs, assert_identical, caught_up, create_topic, mirror_status, start_edge,
                         start_hub, wait_until, watermarks)
from test_disk import mount_tmpfs

FS_MIB = 24


def test_a_full_hub_disk_holds_the_edge_back_and_loses_nothing(tmp_path):
    fs = tmp_path / "fs"
    mount_tmpfs(fs)
    certs = Certs(tmp_path / "certs")
    hub = start_hub(tmp_path, certs, extra=f'[broker]\ndata_dir = "{fs / "data"}"\n')
    edge = None
    try:
        filler = fs / "filler"
        filler.write_bytes(b"\0" * ((FS_MIB - 6) * 1024 * 1024))  # ~6 MiB left
        edge = start_edge(tmp_path, certs, "gw-1", hub.quic_port,
                          extra='[topic_defaults]\n"compression.type" = "producer"\n')
        create_topic(edge.bootstrap, "cameras", 1)
        producer = Producer({"bootstrap.servers": edge.bootstrap, "acks": "all", "compression.type": "none",
                             "linger.ms": 5})
        for i in range(400):  # 400 x 32 kB = 13 MB: more than the hub has room for
            producer.produce("cameras", key=str(i).encode(), value=os.urandom(32 * 1024))
            producer.poll(0)
        assert producer.flush(60) == 0
        edge_end = watermarks(edge.bootstrap, "cameras")[0][1]

        # The hub fills up and refuses; the edge says why and keeps the rest.
        def refused():
            p = mirror_status(edge)["edge"]["partitions"].get("cameras/0", {})
            return p.get("last_error") and p
        state = wait_until(refused, 60, "the hub to refuse for lack of space")
        assert 0 <= state["hub_end"] < edge_end, state
        assert "space" in state["last_error"].lower() or "storage" in state["last_error"].lower(), state
        hub_end = watermarks(hub.bootstrap, "gw-1.cameras")[0][1]
        assert hub_end < edge_end

        # Space returns: the copy completes by itself, identical, without a gap.
        filler.unlink()
        wait_until(lambda: caught_up(edge, hub, "gw-1", ["cameras"]), 120, "the hub to catch up after space returned")
        assert assert_identical(edge, hub, "gw-1", ["cameras"]) == edge_end
        hub_part = mirror_status(hub)["hub"]["edges"]["gw-1"]["partitions"]["gw-1.cameras/0"]
        assert hub_part["gap_records"] == 0 and hub_part["gaps"] == [], hub_part
        print(f"\nhub disk full at offset {hub_end} of {edge_end}; after space returned the copy completed: "
              f"{edge_end} records identical, no gap")
    finally:
        if edge is not None:
            edge.kill()
        hub.kill()
        subprocess.run(["umount", "-l", str(fs)], check=False)
