"""MQTT bridge benchmark: how fast mosquitto drains a queue of QoS 1 (and QoS 0) messages
into (a) a plain C subscriber (mosquitto_sub) and (b) tern's bridge, which appends every
message durably before its PUBACK. Messages (2-66 bytes, tests/e2e/mqtt_clients.py) are queued while the subscriber is offline
(persistent session), so the publisher's speed does not enter the figure. Also samples
tern's RSS while the queue drains (memory must stay bounded however long the outage).

    apt-get install mosquitto mosquitto-clients
    cargo build --release
    python3 tests/bench/mqtt_bench.py [--messages 200000] [--outage 1000000]

Prints figures; asserts nothing. Record them in docs/BENCHMARKS.md.
"""

import argparse
import pathlib
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))

from harness import Tern  # noqa: E402
from mosquitto import Mosquitto, bridge_config  # noqa: E402



def queue_messages(mosq, count):
    """Publishes `count` QoS 1 messages over 100 device topics and waits for every PUBACK
    (paho; mosquitto_pub -l exits with messages still unsent)."""
    subprocess.run([sys.executable, str(HERE.parent / "e2e" / "mqtt_clients.py"), "publish", str(mosq.port),
                    str(count), "100", "1"], check=True, stdout=subprocess.DEVNULL)


def plain_subscriber_rate(workdir, count, qos):
    mosq = Mosquitto(workdir / f"plain-q{qos}", extra="queue_qos0_messages true\n").start()
    try:
        sub = ["mosquitto_sub", "-p", str(mosq.port), "-q", str(qos), "-c", "-i", "plain-sub", "-t", "sensors/+/temperature"]
        subprocess.run([*sub, "-W", "1"], capture_output=True)  # create the session, then leave
        queue_messages(mosq, count)
        started = time.time()
        subprocess.run([*sub, "-C", str(count)], check=True, stdout=subprocess.DEVNULL)
        return count / (time.time() - started)
    finally:
        mosq.stop()


def acked(tern):
    for line in tern.metrics().splitlines():
        if line.startswith("tern_mqtt_acked_total") and 'direction="in"' in line:
            return float(line.split()[-1])
    return 0.0


def appended(tern):
    for line in tern.metrics().splitlines():
        if line.startswith("tern_mqtt_appended_total") and 'direction="in"' in line:
            return float(line.split()[-1])
    return 0.0


def rss_kib(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def bridge_rate(workdir, count, qos, extra=""):
    """Drain rate into tern and peak RSS while draining."""
    mosq = Mosquitto(workdir / f"bridge-q{qos}", extra="queue_qos0_messages true\n").start()
    rule = {"filter": "sensors/+/temperature", "topic": "sensors", "key": "{1}", "qos": qos}
    tern = Tern(workdir / f"tern-q{qos}-{time.time()}", config=bridge_config(mosq, inbound=[rule], extra=extra))
    try:
        tern.start()
        deadline = time.time() + 20
        while "MQTT inbound subscribed" not in tern.log_text() and time.time() < deadline:
            time.sleep(0.05)
        tern.stop()  # the outage: messages queue in mosquitto
        queue_messages(mosq, count)
        tern.start()
        started, peak = time.time(), 0
        count_fn = acked if qos == 1 else appended
        while count_fn(tern) < count:
            peak = max(peak, rss_kib(tern.pid()))
            time.sleep(0.05)
            if time.time() - started > 1200:
                raise RuntimeError("the queue did not drain in 20 minutes")
        elapsed = time.time() - started
        return count / elapsed, peak, rss_kib(tern.pid())
    finally:
        tern.kill()
        mosq.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--outage", type=int, default=1_000_000, help="0 skips the outage run")
    parser.add_argument("--qos", type=int, nargs="*", default=[1, 0])
    parser.add_argument("--max-inflight", type=int, default=1000, help="the bridge's max_inflight")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        extra = f"max_inflight = {args.max_inflight}\n"
        for qos in args.qos:
            plain = plain_subscriber_rate(work, args.messages, qos)
            bridged, peak, _ = bridge_rate(work, args.messages, qos, extra)
            print(f"QoS {qos}: {args.messages} queued messages: mosquitto_sub {plain:,.0f} msg/s, "
                  f"tern bridge (durable before PUBACK) {bridged:,.0f} msg/s, ratio {bridged / plain:.2f}, "
                  f"tern peak RSS {peak / 1024:.1f} MiB", flush=True)
        if not args.outage:
            return
        rate, peak, end = bridge_rate(work, args.outage, 1, extra)
        print(f"outage drain: {args.outage} QoS 1 messages queued in mosquitto drained at {rate:,.0f} msg/s; "
              f"tern RSS peak {peak / 1024:.1f} MiB, after {end / 1024:.1f} MiB", flush=True)


if __name__ == "__main__":
    main()
