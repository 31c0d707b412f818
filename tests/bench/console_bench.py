"""Console and status API figures (docs/BENCHMARKS.md): page weight, first render in
headless chromium, status API latency with 1,000 partitions and 100 groups, and what the
lag sampler costs the broker (CPU seconds and RSS over an idle minute).

    python3 tests/bench/console_bench.py          # uses target/release/tern (TERN_BIN)
"""

import json
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "e2e"))
from confluent_kafka import Consumer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from harness import Tern, rss_kib  # noqa: E402

TOPICS, PARTITIONS, GROUPS = 10, 100, 100


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(url: str, n: int) -> tuple:
    samples, size = [], 0
    for _ in range(n):
        t = time.perf_counter()
        with urllib.request.urlopen(url, timeout=30) as r:
            size = len(r.read())
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1], size


def main():
    work = pathlib.Path(tempfile.mkdtemp(prefix="tern-console-bench-"))
    tern = Tern(work, config="[lag]\nsample_interval_ms = 5000\n")
    tern.start()
    try:
        admin = AdminClient({"bootstrap.servers": tern.bootstrap})
        futures = admin.create_topics([NewTopic(f"t{i}", PARTITIONS, 1) for i in range(TOPICS)])
        for f in futures.values():
            f.result(30)
        # 100 groups, each with committed offsets on 10 partitions of one topic.
        for g in range(GROUPS):
            c = Consumer({"bootstrap.servers": tern.bootstrap, "group.id": f"g{g}", "enable.auto.commit": False})
            c.commit(offsets=[TopicPartition(f"t{g % TOPICS}", p, 0) for p in range(10)], asynchronous=False)
            c.close()
        time.sleep(6)  # one sampler pass
        base = f"http://127.0.0.1:{tern.http_port}"
        print(f"setup: {TOPICS * PARTITIONS} partitions, {GROUPS} groups x 10 committed partitions")
        for path in ["/v1/broker", "/v1/topics", "/v1/groups", "/v1/groups/g7", "/v1/topics/t3",
                     "/v1/topics/t3/records?limit=20", "/metrics"]:
            p50, p99, size = timed(base + path, 50)
            print(f"GET {path:32} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  {size:8} bytes")
        with urllib.request.urlopen(base + "/", timeout=10) as r:
            page = len(r.read())
        print(f"page weight: {page} bytes (one request; the API calls it makes are above)")

        chromium = shutil.which("chromium")
        if chromium:
            from playwright.sync_api import sync_playwright
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=[
                    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync"])
                renders = []
                for _ in range(5):
                    page_ = browser.new_page()
                    t = time.perf_counter()
                    page_.goto(base + "/")
                    page_.wait_for_selector("main[data-ready=overview]")
                    renders.append((time.perf_counter() - t) * 1000)
                    page_.close()
                browser.close()
            print(f"first render of the overview (headless chromium): median {statistics.median(renders):.0f} ms "
                  f"(min {min(renders):.0f}, max {max(renders):.0f})")

        pid = tern.pid()
        cpu0, t0 = cpu_seconds(pid), time.time()
        time.sleep(60)
        used = cpu_seconds(pid) - cpu0
        print(f"idle minute with the lag sampler every 5 s: {used:.2f} CPU s "
              f"({100 * used / (time.time() - t0):.2f} % of a core), RSS {rss_kib(pid) / 1024:.1f} MiB")
    finally:
        tern.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
