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
from mirror_site import create_topic, produce, read_all, wait_until, watermarks  # noqa: E402

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

        def arrived() -> bool:
            for topic in TOPICS:
                mine = {p: h for p, (_, h) in watermarks(source.bootstrap, topic).items()}
                theirs = {p: h for p, (_, h) in watermarks(bootstrap, topic).items()}
                if not mine or mine != theirs:
                    return False
            return True

        started = time.time()
        wait_until(arrived, 300, "every record in tansu")
        total = 0
        for topic in TOPICS:
            mine, theirs = read_all(source.bootstrap, topic), read_all(bootstrap, topic)
            for p in mine:
                assert mine[p] == theirs.get(p), f"{topic}-{p} differs between tern and tansu"
                total += len(mine[p])
        print(f"tansu {bootstrap}: {total:,} records over {len(TOPICS)} topics identical to the source "
              f"(offsets, keys, values, headers, timestamps) after a kill -9 of the source; "
              f"caught up {time.time() - started:.1f} s after the last produce")
        text = source.log_text()
        for line in text.splitlines():
            if "already had" in line or "did not write" in line or "refuse" in line:
                print("  source:", line[:200])
    finally:
        source.kill()
        broker.kill()


if __name__ == "__main__":
    main()
