"""Kafka sink throughput: records a tern forwards into an external cluster (a second tern,
on loopback), against librdkafka producing the same records into the same cluster.

1. The records (RECORDS lines of ~100 bytes) are produced once into the source tern's
   topic `fwd` (4 partitions, lz4) with kcat.
2. Baseline: kcat (librdkafka, acks=all, lz4, idempotent) produces the same lines into
   the cluster's topic `baseline`; wall time from start to exit (all acknowledged).
3. Sink: the source tern restarts with a `[[sinks.kafka]]` for `fwd`; wall time until the
   cluster's `fwd` ends where the source's does, and the source's CPU seconds meanwhile.

    apt-get install kcat
    cargo build --release
    python3 tests/bench/sink_bench.py [--records 2000000]

Prints figures and the ratio (sink / librdkafka records per second); asserts nothing.
Record them in docs/BENCHMARKS.md.
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))

from harness import Tern  # noqa: E402
from mirror_site import create_topic, watermarks  # noqa: E402

PARTITIONS = 4


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def kcat_produce(bootstrap: str, topic: str, path: pathlib.Path) -> float:
    started = time.time()
    done = subprocess.run(["kcat", "-P", "-b", bootstrap, "-t", topic, "-z", "lz4",
                           "-X", "acks=all", "-X", "enable.idempotence=true", "-X", "linger.ms=5",
                           "-X", "batch.size=1000000", "-X", "queue.buffering.max.messages=1000000",
                           "-l", str(path)], capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"kcat failed: {done.stderr}")
    return time.time() - started


def ends(bootstrap: str, topic: str) -> int:
    return sum(h for _, h in watermarks(bootstrap, topic).values())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=2_000_000)
    args = parser.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="sink-bench-"))
    lines = work / "records.txt"
    with open(lines, "w") as f:
        for i in range(args.records):
            f.write(f'{{"device":"sensor-{i % 997}","seq":{i},"temp":{20 + i % 13},"pad":"{"x" * 40}"}}\n')
    payload = lines.stat().st_size - args.records
    cluster = Tern(work / "cluster", name="cluster").start()
    source = Tern(work / "source", name="source").start()
    try:
        create_topic(source.bootstrap, "fwd", PARTITIONS)
        create_topic(cluster.bootstrap, "baseline", PARTITIONS)
        kcat_produce(source.bootstrap, "fwd", lines)
        total = ends(source.bootstrap, "fwd")
        assert total == args.records, total

        base_s = kcat_produce(cluster.bootstrap, "baseline", lines)
        assert ends(cluster.bootstrap, "baseline") == args.records

        source.stop()
        source.extra_config = f"""
[[sinks.kafka]]
name = "bench"
bootstrap_servers = ["{cluster.bootstrap}"]
topics = ["fwd"]
offset_syncs_topic = ""
"""
        # Timed from the start of the process (recovery of the log included: a few ms).
        started = time.time()
        source.start()
        while ends(cluster.bootstrap, "fwd") < total:
            time.sleep(0.05)
        sink_s = time.time() - started
        cpu = cpu_seconds(source.pid())
        stored = sum(p.stat().st_size for p in (source.data_dir / "topics" / "fwd").rglob("*.log"))

        rate = total / sink_s
        base_rate = total / base_s
        print(f"records: {total:,} of ~{payload / total:.0f} B ({payload / 1e6:.0f} MB of values; "
              f"{stored / 1e6:.1f} MB stored lz4)")
        print(f"librdkafka (kcat, acks=all, idempotent, lz4) → cluster: {base_s:.2f} s, "
              f"{base_rate:,.0f} records/s, {payload / base_s / 1e6:.1f} MB/s")
        print(f"tern sink → cluster: {sink_s:.2f} s, {rate:,.0f} records/s, {payload / sink_s / 1e6:.1f} MB/s "
              f"({stored / sink_s / 1e6:.1f} MB/s on the wire), source CPU {cpu:.2f} s "
              f"= {cpu / (payload / 1e9):.1f} CPU s per GB of values")
        print(f"ratio sink / librdkafka: {rate / base_rate:.2f}")
    finally:
        source.kill()
        cluster.kill()


if __name__ == "__main__":
    main()
