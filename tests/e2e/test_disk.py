"""A real full filesystem (a small tmpfs the test mounts): produce fails with an error,
nothing acknowledged is lost or corrupted, and tern accepts writes again by itself once
space is freed. Needs root to mount; without it the test fails, it does not skip."""

import os
import subprocess
import time

from confluent_kafka import Consumer, Producer, TopicPartition

from harness import Tern

FS_MIB = 24


def mount_tmpfs(path):
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_MIB}m", "tmpfs", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, f"cannot mount a tmpfs for the disk-full test (run as root): {result.stderr}"


def produce_until_refused(bootstrap, topic, start, limit):
    """Produces 64 KiB records one at a time until the broker refuses one."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
                         "compression.type": "none", "retries": 0, "message.timeout.ms": 10_000})
    acked, refused = [], []
    for i in range(start, start + limit):
        value = os.urandom(64 * 1024)  # incompressible: fills the disk predictably
        producer.produce(topic, value=value, key=str(i).encode(),
                         on_delivery=lambda err, msg, v=value: (refused if err else acked).append((err, msg.offset() if not err else None, v)))
        producer.flush(15)
        if refused:
            break
    return acked, refused


def read_everything(bootstrap, topic):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "disk-verify", "check.crcs": True,
                         "enable.auto.commit": False})
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    consumer.assign([TopicPartition(topic, 0, low)])
    got = {}
    deadline = time.time() + 60
    while len(got) < high - low and time.time() < deadline:
        for msg in consumer.consume(1000, timeout=0.5):
            assert not msg.error(), f"garbage served: {msg.error()}"
            got[msg.offset()] = msg.value()
    consumer.close()
    return low, high, got


def test_full_disk_fails_closed_and_recovers_when_space_returns(tmp_path):
    fs = tmp_path / "fs"
    mount_tmpfs(fs)
    tern = Tern(tmp_path / "work", config=f'[broker]\ndata_dir = "{fs / "data"}"\n')
    try:
        tern.start()
        # Leave ~6 MiB of free space; the rest is taken by a file we can delete later.
        filler = fs / "filler"
        filler.write_bytes(b"\0" * ((FS_MIB - 6) * 1024 * 1024))

        acked, refused = produce_until_refused(tern.bootstrap, "cam", 0, 500)
        assert refused, "the disk never filled up"
        assert len(acked) > 20, f"only {len(acked)} records fitted"
        err = str(refused[0][0])
        assert "KAFKA_STORAGE_ERROR" in err or "storage" in err.lower(), err
        assert "disk full" in tern.log_text()

        # Nothing acknowledged was lost, nothing partial is served.
        low, high, got = read_everything(tern.bootstrap, "cam")
        assert high == len(acked), f"log end {high} != {len(acked)} acknowledged"
        for _, offset, value in acked:
            assert got[offset] == value

        # Still full: still refused, and still nothing corrupted.
        _, refused_again = produce_until_refused(tern.bootstrap, "cam", 1000, 3)
        assert refused_again

        # Space returns: tern accepts writes again without a restart.
        filler.unlink()
        more, refused_after = produce_until_refused(tern.bootstrap, "cam", 2000, 20)
        assert not refused_after, f"still refused after space returned: {refused_after[0][0]}"
        assert len(more) == 20

        # And a crash now recovers everything acknowledged, before and after the full disk.
        tern.kill()
        tern.start()
        low, high, got = read_everything(tern.bootstrap, "cam")
        for _, offset, value in acked + more:
            assert got[offset] == value
        assert high == len(acked) + len(more)
    finally:
        tern.kill()
        subprocess.run(["umount", "-l", str(fs)], check=False)
