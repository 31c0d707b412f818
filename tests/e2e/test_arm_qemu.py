"""The ARM builds, run for real under qemu-user: the aarch64 broker serves a host Kafka
client, survives kill -9, and its own `tern produce` works; armv7 starts and round-trips;
the musl build is a static binary. Build them first with targets/build (tests/run does)."""

import pathlib
import subprocess
import time

from confluent_kafka import Consumer, TopicPartition

from harness import ROOT, Tern

QEMU = {
    "aarch64-unknown-linux-gnu": ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"],
    "armv7-unknown-linux-gnueabihf": ["qemu-arm", "-L", "/usr/arm-linux-gnueabihf"],
    "aarch64-unknown-linux-musl": ["qemu-aarch64"],
}


def binary(target: str) -> str:
    path = ROOT / "target" / target / "release" / "tern"
    assert path.exists(), f"{path} is missing: run `targets/build {target}` first"
    return str(path)


def arm_cli(target, tern, *args, stdin=None):
    result = subprocess.run([*QEMU[target], binary(target), *args, "--bootstrap-server", tern.bootstrap],
                            input=stdin, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{target} tern {' '.join(args)} failed: {result.stderr}"
    return result


def read_all(bootstrap, topic, partitions, expect, timeout=120):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "arm", "enable.auto.commit": False,
                         "check.crcs": True})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = {}
    deadline = time.time() + timeout
    while len(got) < expect and time.time() < deadline:
        for msg in consumer.consume(5000, timeout=1.0):
            assert not msg.error(), msg.error()
            got[(msg.partition(), msg.offset())] = (msg.key(), msg.value())
    consumer.close()
    return got


def test_aarch64_broker_under_qemu_end_to_end(tmp_path):
    target = "aarch64-unknown-linux-gnu"
    started = time.time()
    tern = Tern(tmp_path / "arm64", binary=binary(target), runner=QEMU[target])
    try:
        tern.start(timeout=120)
        arm_cli(target, tern, "topics", "create", "gateway", "--partitions", "2")
        lines = "".join(f"lock-{i % 25}|{{\"seq\":{i},\"state\":\"locked\"}}\n" for i in range(10_000))
        produced = arm_cli(target, tern, "produce", "-t", "gateway", "--key-separator", "|", stdin=lines)
        assert "10000 records produced" in produced.stderr
        expected = sorted((f"lock-{i % 25}".encode(), f"{{\"seq\":{i},\"state\":\"locked\"}}".encode()) for i in range(10_000))

        got = read_all(tern.bootstrap, "gateway", 2, 10_000)
        assert sorted(got.values()) == expected, "host client reads what the ARM producer wrote"

        tern.kill()
        tern.start(timeout=120)
        got = read_all(tern.bootstrap, "gateway", 2, 10_000)
        assert sorted(got.values()) == expected, "all records survive kill -9 under emulation"
        assert "tern ready" in tern.log_text()
    finally:
        tern.kill()
    print(f"\naarch64 qemu smoke test: {time.time() - started:.1f} s wall time")


def test_armv7_starts_and_round_trips_under_qemu(tmp_path):
    target = "armv7-unknown-linux-gnueabihf"
    version = subprocess.run([*QEMU[target], binary(target), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("tern "), version.stderr
    tern = Tern(tmp_path / "armv7", binary=binary(target), runner=QEMU[target])
    try:
        tern.start(timeout=120)
        lines = "".join(f"sensor-{i % 7}:{i}\n" for i in range(1000))
        arm_cli(target, tern, "produce", "-t", "small", "--key-separator", ":", stdin=lines)
        out = arm_cli(target, tern, "consume", "-t", "small", "--from-beginning", "--max-messages", "1000",
                      "--print-key", "--separator", ":").stdout.splitlines()
        assert sorted(out) == sorted(lines.splitlines())
        assert len(read_all(tern.bootstrap, "small", 1, 1000)) == 1000
    finally:
        tern.kill()


def test_musl_build_is_static_and_runs(tmp_path):
    target = "aarch64-unknown-linux-musl"
    described = subprocess.run(["file", binary(target)], capture_output=True, text=True).stdout
    assert "statically linked" in described or "static-pie linked" in described, described
    version = subprocess.run([*QEMU[target], binary(target), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("tern "), version.stderr


def test_hostile_length_fields_do_not_kill_the_32_bit_broker(tmp_path):
    """On 32-bit ARM a huge element count overflows `isize` inside the decoder; the broker
    must answer with a closed connection, not die."""
    from test_bad_input import CASES, closed_by_server, frame, read_response
    import socket

    target = "armv7-unknown-linux-gnueabihf"
    tern = Tern(tmp_path / "armv7-hostile", binary=binary(target), runner=QEMU[target])
    try:
        tern.start(timeout=120)
        for name in ("huge array count", "huge compact array", "2 GB length prefix", "garbage body"):
            assert closed_by_server(tern.kafka_port, CASES[name][0], timeout=30), name
        # Still alive and serving.
        with socket.create_connection(("127.0.0.1", tern.kafka_port), timeout=30) as s:
            s.sendall(frame(18, 0, 9, b""))
            assert read_response(s)[:4] == (9).to_bytes(4, "big")
        assert tern.proc.poll() is None
    finally:
        tern.kill()
