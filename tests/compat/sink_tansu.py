"""Opt-in (not run by CI): the Kafka sink against a third-party Kafka-compatible broker,
Tansu (Rust, from crates.io, memory storage engine), instead of a second tern.

    cargo install tansu --version 0.6.0 --features dynostore --root /tmp/tansu  # ≈ 20 min
    # (the memory storage engine needs the `dynostore` feature)
    cargo build --release
    TANSU_BIN=/tmp/tansu/bin/tansu python3 tests/compat/sink_tansu.py [--records 100000]

A source tern forwards topics (lz4, gzip and uncompressed producer batches; keys, headers,
explicit timestamps) into Tansu; tern is killed (-9) and restarted halfway. Then every
record in Tansu is compared with the source, offsets included. Prints what held and exits
non-zero on the first difference. Findings are in docs/BENCHMARKS.md.
"""

import argparse
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))

from harness import Tern, free_port  # noqa: E402
from confluent_kafka import Consumer, TopicPartition  # noqa: E402
from mirror_site import create_topic, produce, wait_until, watermarks  # noqa: E402

TOPICS = {"sensors": (3, "lz4", True), "doors": (1, "gzip", True), "plain": (2, "none", False)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    tansu = os.environ.get("TANSU_BIN") or shutil.which("tansu")
    if not tansu:
        sys.exit("tansu not found: cargo install tansu --version 0.6.0 --features dynostore --root /tmp/tansu, "
                 "then TANSU_BIN=/tmp/tansu/bin/tansu")
    work = pathlib.Path(tempfile.mkdtemp(prefix="sink-tansu-"))
    port = free_port()
    log = open(work / "tansu.log", "w")
    broker = subprocess.Popen([tansu, "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
                               "--advertised-listener-url", f"tcp://127.0.0.1:{port}",
                               "--storage-engine", "memory://tansu/"], stdout=log, stderr=log)
    bootstrap = f"127.0.0.1:{port}"
    source = Tern(work / "source", name="source", config=f"""
[[sinks.kafka]]
name = "tansu"
bootstrap_servers = ["{bootstrap}"]
topics = ["sensors", "doors", "plain"]
retry_backoff_max_ms = 1000
discovery_interval_ms = 500
""")
    try:
        def listening() -> bool:
            if broker.poll() is not None:
                sys.exit(f"tansu exited: {(work / 'tansu.log').read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_until(listening, 30, "tansu to listen")
        if broker.poll() is not None:
            sys.exit(f"tansu exited: {(work / 'tansu.log').read_text()[-2000:]}")
        source.start()
        for topic, (partitions, _, _) in TOPICS.items():
            create_topic(source.bootstrap, topic, partitions)
        half = args.records // len(TOPICS) // 2

        def load(start: int):
            for topic, (_, codec, headers) in TOPICS.items():
                produce(source.bootstrap, topic, half, codec=codec, start=start, headers=headers)

        load(0)
        loader = threading.Thread(target=load, args=(half,))
        loader.start()
        time.sleep(1.0)
        source.kill()
        source.start()
        loader.join()

        # Tansu 0.6.0 reports a partition's end (high watermark, ListOffsets) as its
        # number of batches, not of offsets: reading until nothing more comes is the only
        # way to see what it holds.
        def everything(bootstrap: str, topic: str, partitions: int) -> dict:
            c = Consumer({"bootstrap.servers": bootstrap, "group.id": "compat", "enable.auto.commit": False})
            c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
            out = {p: [] for p in range(partitions)}
            idle = time.time()
            while time.time() - idle < 5:
                for m in c.consume(10_000, timeout=0.5):
                    if m.error() is None:
                        out[m.partition()].append((m.offset(), m.key(), m.value(), tuple(m.headers() or ()),
                                                   m.timestamp()[1]))
                        idle = time.time()
            c.close()
            return out

        expected = half * 2 * len(TOPICS)
        deadline = time.time() + 300
        while True:
            theirs = {t: everything(bootstrap, t, TOPICS[t][0]) for t in TOPICS}
            count = sum(len(r) for parts in theirs.values() for r in parts.values())
            if count >= expected or time.time() > deadline:
                break
        total, differences = 0, []
        for topic, (partitions, _, _) in TOPICS.items():
            mine = everything(source.bootstrap, topic, partitions)
            for p in range(partitions):
                total += len(mine[p])
                if mine[p] != theirs[topic][p]:
                    a, b = mine[p], theirs[topic][p]
                    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                    differences.append(f"{topic}-{p}: {len(a)} records here, {len(b)} in tansu, first difference "
                                       f"at index {first}: {a[first] if first < len(a) else None!r} vs "
                                       f"{b[first] if first < len(b) else None!r}")
        marks = {t: watermarks(bootstrap, t) for t in TOPICS}
        print(f"tansu {bootstrap}: {total:,} records produced here over {len(TOPICS)} topics, "
              f"{count:,} read back from tansu; tansu's watermarks: {marks}")
        for d in differences:
            print("  DIFFERENT", d[:400])
        if not differences:
            print("  identical record by record (offsets, keys, values, headers, timestamps)")
        text = source.log_text()
        for line in text.splitlines():
            if "already had" in line or "did not write" in line or "refuse" in line or "ends before" in line:
                print("  source:", line[:200])
        if differences:
            sys.exit(1)
    finally:
        source.kill()
        broker.kill()


if __name__ == "__main__":
    main()
