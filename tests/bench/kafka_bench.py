#!/usr/bin/env python3
"""Produce/consume benchmark of tern with a native librdkafka client (kcat).

    python3 tests/bench/kafka_bench.py [--records N]

Starts a release tern on ephemeral loopback ports with its data on the local disk,
produces N 100-byte JSON sensor events with kcat (acks=all: every ack is fsynced), reads
them back with kcat, and prints throughput, broker RSS (idle and peak), time to ready and
the stored/raw byte ratio. Prints figures only; asserts nothing about speed.
"""

import argparse
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "e2e"))
from harness import TERN_BIN, Tern, rss_kib  # noqa: E402


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def event(i: int) -> bytes:
    line = (
        f'{{"device":"sensor-{i % 500:03d}","ts":{1767225600000 + i},'
        f'"temp_c":{18 + (i % 170) / 10:.1f},"hum":{30 + i % 50},"bat":{3 + (i % 9) / 10:.1f},'
        f'"door":"closed","ok":true}}'
    )
    return line.encode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--partitions", type=int, default=1)
    args = parser.parse_args()
    n = args.records

    work = pathlib.Path(tempfile.mkdtemp(prefix="tern-bench-", dir=os.environ.get("TERN_BENCH_DIR", str(pathlib.Path.home()))))
    events = work / "events.jsonl"
    raw_bytes = 0
    with open(events, "wb") as f:
        for i in range(n):
            e = event(i)
            raw_bytes += len(e)
            f.write(e + b"\n")

    tern = Tern(work / "tern").start()
    try:
        time.sleep(1.0)
        idle_rss = rss_kib(tern.pid())
        subprocess.run([TERN_BIN, "topics", "create", "bench", "--partitions", str(args.partitions),
                        "--bootstrap-server", tern.bootstrap], check=True, capture_output=True)

        started = time.time()
        subprocess.run(
            ["kcat", "-P", "-b", tern.bootstrap, "-t", "bench", "-l", "-X", "acks=all",
             "-X", "linger.ms=5", "-X", "batch.num.messages=10000", "-X", "batch.size=1000000",
             "-X", "queue.buffering.max.messages=2000000", "-X", "queue.buffering.max.kbytes=2097151",
             "-X", "compression.type=none", str(events)],
            check=True,
        )
        produce_s = time.time() - started
        peak_rss = peak_rss_kib(tern.pid())

        started = time.time()
        out = subprocess.run(
            ["kcat", "-C", "-b", tern.bootstrap, "-t", "bench", "-o", "beginning", "-e", "-q",
             "-X", "fetch.message.max.bytes=8388608",
             # librdkafka 2.0 otherwise pauses up to 1 s whenever its queue passes 100k records.
             "-X", "queued.min.messages=10000000", "-X", "queued.max.messages.kbytes=2097151",
             "-f", "%o\n"],
            check=True, capture_output=True,
        ).stdout
        consume_s = time.time() - started
        consumed = out.count(b"\n")

        metrics = tern.metrics()
        fetch_s = metric(metrics, 'tern_request_duration_seconds_sum{api="fetch"}')
        fetches = metric(metrics, 'tern_request_duration_seconds_count{api="fetch"}')
        fsyncs = metric(metrics, "tern_fsync_duration_seconds_count")
        stored = sum(p.stat().st_size for p in (tern.data_dir / "topics" / "bench").rglob("*.log"))
        tern.stop()
        tern.start()
        ready_ms = tern.ready_ms()
        restart_rss = rss_kib(tern.pid())
    finally:
        tern.kill()

    cpu = platform.processor() or platform.machine()
    print(f"tern kafka benchmark — {n:,} x ~{raw_bytes // n}-byte JSON events, {args.partitions} partition(s), "
          f"{os.cpu_count()} cores ({cpu}), kcat {kcat_version()}")
    print(f"  produce (kcat, acks=all, lz4 storage): {n / produce_s:>12,.0f} records/s  ({produce_s:.2f} s)")
    print(f"  consume (kcat, from beginning):        {consumed / consume_s:>12,.0f} records/s  ({consume_s:.2f} s, {consumed:,} records)")
    print(f"  broker time serving fetches:           {fetch_s:>12.2f} s over {fetches:.0f} fetches (incl. the final long poll)")
    print(f"  fsyncs during the run:                 {fsyncs:>12.0f}")
    print(f"  broker RSS idle:                       {idle_rss / 1024:>12.1f} MiB")
    print(f"  broker RSS peak under load:            {peak_rss / 1024:>12.1f} MiB")
    print(f"  broker RSS after restart (idle):       {restart_rss / 1024:>12.1f} MiB")
    print(f"  ready after start (recovery included): {ready_ms:>12} ms")
    print(f"  stored / raw payload bytes:            {stored / raw_bytes:>12.3f}  ({stored:,} / {raw_bytes:,})")
    subprocess.run(["rm", "-rf", str(work)])


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return float("nan")


def kcat_version() -> str:
    import re

    out = subprocess.run(["kcat", "-V"], capture_output=True, text=True)
    text = out.stdout + out.stderr
    version = re.search(r"Version (\S+)", text)
    lib = re.search(r"librdkafka (\S+)", text)
    return f"{version.group(1) if version else '?'} (librdkafka {lib.group(1) if lib else '?'})"


if __name__ == "__main__":
    main()
