"""`tern bench`: its figures are about what really happened. Every record it says it sent is
in the log (counted by librdkafka), the consumer side reads them all back and commits as a
group member would, the broker figures come from the broker process and its /metrics, and
bad arguments or a refused produce end with a clear error."""

import json
import subprocess
import time

from confluent_kafka import Consumer, TopicPartition

from harness import TERN_BIN


def bench(tern, *args, check=True):
    result = subprocess.run(
        [TERN_BIN, "bench", "--bootstrap-server", tern.bootstrap, *args,
         "--report-interval-ms", "0"],
        capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, f"tern bench {' '.join(args)} failed: {result.stderr}"
    return result


def end_offsets(tern, topic, partitions):
    consumer = Consumer({"bootstrap.servers": tern.bootstrap, "group.id": "probe"})
    try:
        return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(partitions)]
    finally:
        consumer.close()


def test_produce_and_consume_figures_match_the_log(tern):
    produced = json.loads(bench(
        tern, "produce", "-t", "devices", "--records", "20000", "--record-size", "120",
        "--connections", "20", "--batch", "7", "--partitions", "3", "--idempotent",
        "--in-flight", "2", "--broker-pid", str(tern.pid()),
        "--http", f"127.0.0.1:{tern.http_port}", "--json").stdout)
    assert produced["records"] == 20000 and produced["bytes"] == 20000 * 120
    # 1,000 records per connection in requests of 7: 142 full ones and one of 6.
    assert produced["requests"] == 20 * 143
    assert produced["latency_ms"]["p99"] >= produced["latency_ms"]["p50"] > 0
    assert produced["broker"]["cpu_seconds"] > 0
    assert produced["broker"]["context_switches"] > 0
    assert produced["broker"]["fsyncs"] >= 1, "fsyncs are read from tern's /metrics"
    assert sum(end_offsets(tern, "devices", 3)) == 20000, "every record reported is in the log"

    consumed = json.loads(bench(tern, "consume", "-t", "devices", "--group", "bench-readers",
                                "--json").stdout)
    assert consumed["records"] == 20000 and consumed["bytes"] == 20000 * 120
    # Committed like a group member: librdkafka sees the group's offsets at the log end.
    consumer = Consumer({"bootstrap.servers": tern.bootstrap, "group.id": "bench-readers"})
    try:
        committed = consumer.committed([TopicPartition("devices", p) for p in range(3)], timeout=10)
    finally:
        consumer.close()
    assert [tp.offset for tp in committed] == end_offsets(tern, "devices", 3)
    # A second run of the group finds nothing left to read.
    again = json.loads(bench(tern, "consume", "-t", "devices", "--group", "bench-readers",
                             "--json").stdout)
    assert again["records"] == 0


def test_text_output_acks_zero_lz4_and_a_rate_limit(tern):
    text = bench(tern, "produce", "-t", "plain", "--records", "3000", "--batch", "100",
                 "--compression", "lz4", "--broker-pid", str(tern.pid())).stdout
    assert "3000 records sent" in text and "latency per request" in text
    assert "µs per request" in text and "context switches per request" in text
    fire_and_forget = json.loads(bench(tern, "produce", "-t", "plain", "--records", "2000",
                                       "--batch", "10", "--acks", "0", "--json").stdout)
    assert fire_and_forget["records"] == 2000 and fire_and_forget["latency_ms"] is None
    limited = json.loads(bench(tern, "produce", "-t", "plain", "--records", "500", "--batch", "5",
                               "--rate", "2000", "--connections", "2", "--json").stdout)
    assert limited["records"] == 500
    # acks=0 gives no answer to wait for: the count is checked in the log, with time to land.
    total = 3000 + 2000 + 500
    for _ in range(50):
        high = end_offsets(tern, "plain", 1)[0]
        if high == total:
            break
        time.sleep(0.1)
    assert high == total
    read = bench(tern, "consume", "-t", "plain").stdout
    assert f"{total} records read" in read


def test_bad_arguments_and_refusals_are_clear_errors(tern):
    bad = bench(tern, "produce", "--idempotent", "--acks", "1", "--records", "10", check=False)
    assert bad.returncode != 0 and "--idempotent needs --acks all" in bad.stderr
    bad = bench(tern, "produce", "--compression", "brotli", "--records", "10", check=False)
    assert bad.returncode != 0 and "--compression must be none or lz4" in bad.stderr
    bad = bench(tern, "produce", "--connections", "0", check=False)
    assert bad.returncode != 0 and "at least 1" in bad.stderr
    # The broker refuses: records larger than max.message.bytes (1 MiB by default).
    bad = bench(tern, "produce", "-t", "big", "--records", "1", "--batch", "1",
                "--record-size", "2000000", check=False)
    assert bad.returncode != 0 and "produce to partition 0 failed" in bad.stderr
    assert "MessageTooLarge" in bad.stderr or "RecordListTooLarge" in bad.stderr, bad.stderr
    # Asking for more records than exist ends with the count, not a hang.
    short = bench(tern, "consume", "-t", "big", "--records", "5", check=False)
    assert short.returncode != 0 and "only 0 of 5 records arrived" in short.stderr, short.stderr
    nobody = subprocess.run([TERN_BIN, "bench", "--bootstrap-server", "127.0.0.1:1", "produce",
                             "--records", "10"], capture_output=True, text=True, timeout=60)
    assert nobody.returncode != 0 and "127.0.0.1:1" in nobody.stderr
