"""Log compaction figures (docs/BENCHMARKS.md): cleaner throughput (MB/s of log cleaned),
the broker's peak RSS while it cleans with the default key map, and produce throughput on
the same topic while the cleaner runs vs. while it does not.

    python3 tests/bench/compaction_bench.py     # uses target/release/tern (TERN_BIN)

A compacted topic is filled with RECORDS updates over KEYS keys while nothing is cleanable
(min.compaction.lag.ms = 1 h); one million more records are produced (baseline); then the
lag is set to 0 and one million records are produced while the cleaner works.
"""

import os
import pathlib
import re
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "e2e"))
from confluent_kafka import Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic  # noqa: E402

from harness import Tern, rss_kib  # noqa: E402

RECORDS = int(os.environ.get("COMPACTION_RECORDS", "5000000"))
KEYS = int(os.environ.get("COMPACTION_KEYS", "100000"))
EXTRA = 1_000_000
# storage.cleaner_io_max_bytes_per_second (tern's default: 32 MiB/s; 0: no limit).
IO_LIMIT = int(os.environ.get("COMPACTION_IO_LIMIT", str(32 << 20)))


def produce(bootstrap, n, start):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20, "batch.num.messages": 10000,
                  "queue.buffering.max.messages": 500000})
    t = time.perf_counter()
    for i in range(start, start + n):
        key = b"device-%06d" % (i % KEYS)
        value = b'{"seq":%d,"temperature":%d.%d,"door":"closed","battery":%d}' % (i, 20 + i % 7, i % 10, i % 100)
        while True:
            try:
                p.produce("state", key=key, value=value)
                break
            except BufferError:
                p.poll(0.01)
    p.flush(300)
    return n / (time.perf_counter() - t)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        tern = Tern(pathlib.Path(tmp), config=f"[storage]\ncleaner_interval_ms = 500\ncleaner_io_max_bytes_per_second = {IO_LIMIT}\n").start()
        try:
            admin = AdminClient({"bootstrap.servers": tern.bootstrap})
            admin.create_topics([NewTopic("state", 1, 1, config={
                "cleanup.policy": "compact", "min.compaction.lag.ms": "3600000",
                "segment.bytes": str(16 << 20)})])["state"].result(30)
            produce(tern.bootstrap, RECORDS, 0)
            baseline = produce(tern.bootstrap, EXTRA, RECORDS)
            rss_before = rss_kib(tern.pid())
            peak = [rss_before]
            stop = threading.Event()

            def sample():
                while not stop.is_set():
                    peak[0] = max(peak[0], rss_kib(tern.pid()))
                    time.sleep(0.02)

            sampler = threading.Thread(target=sample)
            sampler.start()
            resource = ConfigResource("topic", "state", set_config={
                "cleanup.policy": "compact", "min.compaction.lag.ms": "0", "segment.bytes": str(16 << 20)})
            list(admin.alter_configs([resource]).values())[0].result(30)
            during = produce(tern.bootstrap, EXTRA, RECORDS + EXTRA)
            deadline = time.time() + 600
            pattern = r"log cleaned topic=state .*?bytes_before=(\d+) bytes_after=(\d+).*?elapsed_ms=(\d+)"
            while time.time() < deadline and not any(int(b) > 0 for b, _, _ in re.findall(pattern, tern.log_text())):
                time.sleep(0.2)
            time.sleep(1)
            stop.set()
            sampler.join()
            passes = [tuple(int(x) for x in p) for p in re.findall(pattern, tern.log_text())]
            before, after, ms = max(passes)
            print(f"records: {RECORDS + EXTRA:,} updates over {KEYS:,} keys before the first pass")
            print(f"first cleaner pass: {before / 1e6:.1f} MB -> {after / 1e6:.2f} MB in {ms / 1000:.1f} s "
                  f"= {before / 1e6 / (ms / 1000):.1f} MB/s of log cleaned (io limit {IO_LIMIT >> 20} MiB/s, read + write)")
            print(f"broker RSS: {rss_before / 1024:.0f} MiB before, peak {peak[0] / 1024:.0f} MiB while cleaning "
                  f"(+{(peak[0] - rss_before) / 1024:.0f} MiB; key map 4 MiB)")
            print(f"produce: {baseline:,.0f} records/s without cleaning, {during:,.0f} records/s while cleaning "
                  f"(ratio {during / baseline:.2f})")
        finally:
            tern.kill()


if __name__ == "__main__":
    main()
