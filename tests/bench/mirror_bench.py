#!/usr/bin/env python3
"""Mirroring benchmark: an edge's backlog of 100-byte JSON sensor events caught up by a hub
over QUIC on loopback, against a plain Kafka-protocol copy over TCP (kcat | kcat) of the
same data; then the hub's memory with 1 and with N edges connected.

    python3 tests/bench/mirror_bench.py [--records 10000000] [--edges 20]

Figures only; asserts nothing about speed (docs/BENCHMARKS.md records them).
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "e2e"))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from harness import TERN_BIN, Tern, rss_kib  # noqa: E402
from kafka_bench import event, kcat_version  # noqa: E402
from mirror_site import Certs, create_topic, free_udp_port, hub_config, edge_config, mirror_status, watermarks  # noqa: E402

TOPIC = "sensors"


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def stored_bytes(tern: Tern, topic: str) -> int:
    return sum(p.stat().st_size for p in (tern.data_dir / "topics" / topic).rglob("*.log"))


def ends(bootstrap: str, topic: str) -> dict:
    return {p: high for p, (_, high) in watermarks(bootstrap, topic).items()}


def wait_equal(a: str, ta: str, b: str, tb: str, timeout: float) -> float:
    started = time.time()
    target = ends(a, ta)
    while time.time() - started < timeout:
        if ends(b, tb) == target:
            return time.time() - started
        time.sleep(0.1)
    raise RuntimeError(f"{tb} did not catch up with {ta} in {timeout}s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--edges", type=int, default=20)
    args = parser.parse_args()
    n = args.records

    work = pathlib.Path(tempfile.mkdtemp(prefix="tern-mirror-bench-",
                                         dir=os.environ.get("TERN_BENCH_DIR", str(pathlib.Path.home()))))
    events = work / "events.txt"
    raw = 0
    with open(events, "wb") as f:
        for i in range(n):
            e = event(i)
            raw += len(e)
            f.write(f"sensor-{i % 500:03d}\t".encode() + e + b"\n")

    certs = Certs(work / "certs")
    hub_port = free_udp_port()
    hub = Tern(work / "hub", name="hub", config=hub_config(certs, hub_port))
    edge = Tern(work / "gw-1", name="gw-1", config=edge_config(certs, "gw-1", hub_port)).start()
    sink = Tern(work / "sink", name="sink").start()
    extra_edges = []
    try:
        # 1. A backlog on the edge while the hub is down.
        create_topic(edge.bootstrap, TOPIC, args.partitions)
        started = time.time()
        subprocess.run(["kcat", "-P", "-b", edge.bootstrap, "-t", TOPIC, "-K", "\t", "-l",
                        "-X", "linger.ms=20", "-X", "batch.num.messages=10000", "-X", "batch.size=1000000",
                        "-X", "queue.buffering.max.messages=2000000", "-X", "queue.buffering.max.kbytes=2097151",
                        "-X", "compression.type=none", str(events)], check=True)
        produce_s = time.time() - started
        stored = stored_bytes(edge, TOPIC)

        # 2. The hub comes up and catches up; the edge's CPU and the bytes on the wire are counted.
        cpu0 = cpu_seconds(edge.pid())
        wire0 = mirror_status(edge)["edge"].get("wire_tx_bytes", 0)
        hub.start()
        hub_up = time.time()
        while mirror_status(edge)["edge"]["state"] != "connected":
            time.sleep(0.01)
        reconnect_s = time.time() - hub_up
        cpu0 = cpu_seconds(edge.pid())
        catch_up_s = wait_equal(edge.bootstrap, TOPIC, hub.bootstrap, f"gw-1.{TOPIC}", 3600)
        edge_cpu = cpu_seconds(edge.pid()) - cpu0
        time.sleep(1.5)  # the status refreshes its wire counters every discovery tick
        wire = mirror_status(edge)["edge"]["wire_tx_bytes"] - wire0
        hub_rss_1 = rss_kib(hub.pid())

        # 3. Baseline: the same records over TCP with the Kafka protocol, kcat to kcat.
        create_topic(sink.bootstrap, TOPIC, args.partitions)
        started = time.time()
        consume = subprocess.Popen(["kcat", "-C", "-b", edge.bootstrap, "-t", TOPIC, "-o", "beginning", "-e", "-q",
                                    "-X", "fetch.message.max.bytes=8388608", "-X", "queued.min.messages=1000000",
                                    "-K", "\t", "-f", "%k\t%s\n"], stdout=subprocess.PIPE)
        subprocess.run(["kcat", "-P", "-b", sink.bootstrap, "-t", TOPIC, "-K", "\t",
                        "-X", "linger.ms=20", "-X", "batch.num.messages=10000", "-X", "batch.size=1000000",
                        "-X", "queue.buffering.max.messages=2000000", "-X", "queue.buffering.max.kbytes=2097151",
                        "-X", "compression.type=lz4"], stdin=consume.stdout, check=True)
        consume.wait()
        baseline_s = time.time() - started
        copied = sum(ends(sink.bootstrap, TOPIC).values())

        # 4. The hub with N edges connected, each with a small topic mirrored.
        for i in range(2, args.edges + 1):
            e = Tern(work / f"gw-{i}", name=f"gw-{i}", config=edge_config(certs, f"gw-{i}", hub_port)).start()
            extra_edges.append(e)
            create_topic(e.bootstrap, TOPIC, 1)
            subprocess.run([TERN_BIN, "produce", "-b", e.bootstrap, "--topic", TOPIC],
                           input=b"\n".join(event(j) for j in range(10_000)) + b"\n", check=True,
                           capture_output=True)
        for i, e in enumerate(extra_edges, start=2):
            wait_equal(e.bootstrap, TOPIC, hub.bootstrap, f"gw-{i}.{TOPIC}", 120)
        connected = sum(1 for v in mirror_status(hub)["hub"]["edges"].values() if v["connected"])
        hub_rss_n = rss_kib(hub.pid())
    finally:
        for t in [edge, hub, sink, *extra_edges]:
            t.kill()

    mb = stored / 1e6
    print(f"tern mirror benchmark — {n:,} x ~{raw // n}-byte JSON events ({raw / 1e9:.2f} GB raw, "
          f"{stored / 1e6:.0f} MB stored lz4), {args.partitions} partitions, {os.cpu_count()} cores, "
          f"kcat {kcat_version()}, loopback")
    print(f"  backlog produced on the edge (kcat, acks=all): {n / produce_s:>12,.0f} records/s ({produce_s:.1f} s)")
    print(f"  edge reconnected after the hub started:       {reconnect_s:>12.1f} s")
    print(f"  hub catch-up over QUIC:                        {n / catch_up_s:>12,.0f} records/s, "
          f"{mb / catch_up_s:,.1f} MB/s of stored batches ({catch_up_s:.1f} s)")
    print(f"  edge CPU during catch-up:                      {edge_cpu:>12.1f} s "
          f"({edge_cpu / catch_up_s:.2f} cores, {edge_cpu / (stored / 1e9):.1f} CPU s per GB stored)")
    print(f"  bytes on the wire / raw payload:               {wire / raw:>12.3f} ({wire:,} UDP bytes)")
    print(f"  baseline kcat | kcat over TCP (Kafka):         {copied / baseline_s:>12,.0f} records/s "
          f"({baseline_s:.1f} s, {copied:,} records)")
    print(f"  QUIC mirror vs baseline:                       {baseline_s / catch_up_s:>12.2f} x faster")
    print(f"  hub RSS, 1 edge (after the catch-up):          {hub_rss_1 / 1024:>12.1f} MiB")
    print(f"  hub RSS, {connected} edges connected:               {hub_rss_n / 1024:>12.1f} MiB")
    subprocess.run(["rm", "-rf", str(work)])


if __name__ == "__main__":
    main()
