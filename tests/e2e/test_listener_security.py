"""Kafka listener security with real clients: a tern with a SASL_SSL listener (SCRAM) and a
SASL_PLAINTEXT listener (PLAIN) beside the loopback PLAINTEXT one. librdkafka, kafka-python
and KafkaJS authenticate, produce, consume in groups; wrong passwords, unknown users and
untrusted certificates are refused with clear client-side errors; nothing but the SASL
handshake is served before authentication."""

import json
import os
import pathlib
import socket
import struct
import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from harness import TERN_BIN, Tern, free_port

KAFKAJS = pathlib.Path(__file__).parent / "kafkajs"
PASSWORD = "alice-s3cret"
BAD = "Wr0ng-guess"


def certs(dir: pathlib.Path, name: str = "localhost") -> pathlib.Path:
    for args in (["ca"], ["hub", "--name", name, "--name", "127.0.0.1"]):
        done = subprocess.run([TERN_BIN, "certs", *args, "--dir", str(dir)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    return dir


@pytest.fixture
def secured(tmp_path):
    ca_dir = certs(tmp_path / "certs")
    ssl_port, sasl_port = free_port(), free_port()
    tern = Tern(tmp_path / "tern", config=f"""
[groups]
initial_rebalance_delay_ms = 200
min_session_timeout_ms = 1000

[[kafka.listeners]]
name = "SECURE"
listen = "127.0.0.1:{ssl_port}"
security_protocol = "SASL_SSL"
cert = "{ca_dir / 'hub.pem'}"
key = "{ca_dir / 'hub.key'}"

[[kafka.listeners]]
name = "LAN"
listen = "127.0.0.1:{sasl_port}"
security_protocol = "SASL_PLAINTEXT"
sasl_mechanisms = ["PLAIN", "SCRAM-SHA-256"]
""")
    done = subprocess.run([TERN_BIN, "users", "add", "alice", "--data-dir", str(tern.data_dir)],
                          input=PASSWORD + "\n", capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    tern.start()
    tern.ssl_bootstrap = f"127.0.0.1:{ssl_port}"
    tern.sasl_bootstrap = f"127.0.0.1:{sasl_port}"
    tern.ca = ca_dir / "ca.pem"
    yield tern
    tern.kill()


def scram_ssl(tern, user="alice", password=PASSWORD, ca=None) -> dict:
    return {"bootstrap.servers": tern.ssl_bootstrap, "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user, "sasl.password": password,
            "ssl.ca.location": str(ca or tern.ca), "ssl.endpoint.identification.algorithm": "https"}


def plain(tern, user="alice", password=PASSWORD) -> dict:
    return {"bootstrap.servers": tern.sasl_bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN", "sasl.username": user, "sasl.password": password}


def round_trip(config: dict, topic: str, count: int = 1000):
    producer = Producer({**config, "acks": "all", "enable.idempotence": True})
    for i in range(count):
        producer.produce(topic, key=str(i).encode(), value=f"v{i}".encode())
    assert producer.flush(30) == 0
    consumer = Consumer({**config, "group.id": f"g-{topic}", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    seen = set()
    deadline = time.time() + 60
    while time.time() < deadline:
        m = consumer.poll(0.2)
        if m is not None and m.error() is None:
            seen.add(m.value())
        if len(seen) >= count:
            break
    consumer.commit(asynchronous=False)
    committed = consumer.committed(consumer.assignment(), timeout=10)
    consumer.close()
    assert len(seen) == count, len(seen)
    assert sum(tp.offset for tp in committed) == count


def refused(config: dict) -> str:
    """What librdkafka tells the application (error callback) when it cannot connect."""
    errors = []
    producer = Producer({**config, "error_cb": lambda e: errors.append(str(e))})
    with pytest.raises(KafkaException):
        producer.list_topics(timeout=3)
    deadline = time.time() + 10
    while not errors and time.time() < deadline:
        producer.poll(0.2)
    return " ".join(errors)


def test_librdkafka_scram_over_tls_and_plain_over_plaintext(secured):
    round_trip(scram_ssl(secured), "secure-topic")
    round_trip(plain(secured), "lan-topic")
    # SCRAM-SHA-256 is offered on the LAN listener too.
    round_trip({**plain(secured), "sasl.mechanism": "SCRAM-SHA-256"}, "lan-scram")


def test_debian_kcat_librdkafka_2_0_logs_in_with_scram(secured):
    """Debian's kcat links librdkafka 2.0, whose SCRAM client repeats its nonce
    (librdkafka#4895, fixed in 2.6.1); tern accepts that form, as Kafka 3.8.1–3.9 do."""
    common = ["-b", secured.ssl_bootstrap, "-X", "security.protocol=SASL_SSL", "-X", "sasl.mechanism=SCRAM-SHA-512",
              "-X", "sasl.username=alice", "-X", f"sasl.password={PASSWORD}", "-X", f"ssl.ca.location={secured.ca}"]
    done = subprocess.run(["kcat", "-P", "-t", "kcat-secure", *common], input="a\nb\nc\n",
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    done = subprocess.run(["kcat", "-C", "-t", "kcat-secure", "-e", "-f", "%s\n", *common],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.split() == ["a", "b", "c"], (done.stdout, done.stderr)


def test_wrong_credentials_and_untrusted_certificates_are_refused_clearly(secured, tmp_path):
    assert "Authentication failed" in refused(scram_ssl(secured, password=BAD))
    assert "Authentication failed" in refused(scram_ssl(secured, user="mallory"))
    assert "Authentication failed" in refused(plain(secured, password=BAD))
    other_ca = certs(tmp_path / "other") / "ca.pem"
    text = refused(scram_ssl(secured, ca=other_ca))
    assert "SSL handshake failed" in text or "certificate verify failed" in text, text
    # A mechanism the listener does not offer.
    text = refused({**plain(secured), "sasl.mechanism": "SCRAM-SHA-512"})
    assert "SCRAM-SHA-512" in text and ("not supported" in text or "Unsupported" in text), text
    log = secured.log_text()
    assert 'authentication failed reason=invalid credentials for user "alice" (PLAIN)' in log
    assert 'unknown user "mallory"' in log
    assert PASSWORD not in log and BAD not in log, "a password reached the log"
    metrics = secured.metrics()
    failures = [l for l in metrics.splitlines() if l.startswith("tern_auth_failures_total")]
    assert failures and float(failures[0].split()[-1]) >= 3, failures


def test_nothing_but_the_handshake_is_served_before_authentication(secured):
    host, port = secured.sasl_bootstrap.split(":")
    # A Metadata v1 request (api 3) straight away: the connection is closed, nothing answered.
    body = struct.pack(">hhi", 3, 1, 7) + struct.pack(">h", 4) + b"evil" + struct.pack(">i", -1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        assert s.recv(4) == b"", "a request before authentication was answered"
    # An oversized frame before authentication is refused without reading it.
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(struct.pack(">i", 10 << 20) + b"\0" * 1024)
        assert s.recv(4) == b""
    # The PLAINTEXT listener on loopback still serves local tools without credentials.
    AdminClient({"bootstrap.servers": secured.bootstrap}).list_topics(timeout=10)
    assert "before SASL authentication" in secured.log_text()


def test_kafka_python_with_scram_over_tls_and_plain(secured, caplog):
    from kafka import KafkaConsumer, KafkaProducer
    for name, options in [
        ("kp-secure", dict(bootstrap_servers=secured.ssl_bootstrap, security_protocol="SASL_SSL",
                           sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="alice",
                           sasl_plain_password=PASSWORD, ssl_cafile=str(secured.ca))),
        ("kp-lan", dict(bootstrap_servers=secured.sasl_bootstrap, security_protocol="SASL_PLAINTEXT",
                        sasl_mechanism="PLAIN", sasl_plain_username="alice", sasl_plain_password=PASSWORD)),
    ]:
        producer = KafkaProducer(acks="all", **options)
        for i in range(200):
            producer.send(name, f"v{i}".encode())
        producer.flush(30)
        producer.close()
        consumer = KafkaConsumer(name, group_id=f"g-{name}", auto_offset_reset="earliest",
                                 consumer_timeout_ms=10_000, **options)
        values = {m.value for m in consumer}
        consumer.commit()
        consumer.close()
        assert len(values) == 200, (name, len(values))
    from kafka.errors import KafkaError
    with pytest.raises(KafkaError) as refused_here:
        producer = KafkaProducer(bootstrap_servers=secured.sasl_bootstrap, security_protocol="SASL_PLAINTEXT",
                                 sasl_mechanism="PLAIN", sasl_plain_username="alice", sasl_plain_password=BAD,
                                 request_timeout_ms=5000, max_block_ms=5000)
        producer.send("kp-lan", b"x").get(timeout=10)
    # kafka-python retries until its timeout; the reason is in its log.
    assert "SaslAuthenticationFailedError: Authentication failed: invalid username or password" in caplog.text, \
        (repr(refused_here.value), caplog.text[-2000:])


def test_kafkajs_with_scram_over_tls(secured):
    assert (KAFKAJS / "node_modules" / "kafkajs").exists(), "run `npm ci --prefix tests/e2e/kafkajs` (tests/run does)"
    result = subprocess.run(["node", str(KAFKAJS / "group_round_trip.js"), secured.ssl_bootstrap, "js-secure", "1000"],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "KAFKAJS_NO_PARTITIONER_WARNING": "1",
                                 "KAFKAJS_CA": str(secured.ca), "KAFKAJS_SASL_MECHANISM": "scram-sha-512",
                                 "KAFKAJS_USER": "alice", "KAFKAJS_PASSWORD": PASSWORD})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["first"] == 1000 and summary["committed"] == 1000, summary
    bad = subprocess.run(["node", str(KAFKAJS / "group_round_trip.js"), secured.ssl_bootstrap, "js-bad", "10"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "KAFKAJS_CA": str(secured.ca), "KAFKAJS_SASL_MECHANISM": "scram-sha-512",
                              "KAFKAJS_USER": "alice", "KAFKAJS_PASSWORD": "wrong"})
    assert bad.returncode != 0 and "SASL SCRAM SHA512 authentication failed" in bad.stderr, bad.stderr[-2000:]


def test_a_flood_of_unauthenticated_connections_leaves_logged_in_clients_served(tmp_path):
    """10,000 connections from one address (127.0.0.2) that never log in — idle, oversized
    frames, requests before authentication — while a librdkafka client (127.0.0.1) logs in,
    produces and consumes. The per-address limit and the login timeout keep the slots for
    the real client; memory stays bounded."""
    import resource
    import threading
    from harness import rss_kib
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    port = free_port()
    tern = Tern(tmp_path / "tern", config=f"""
[kafka]
max_connections_per_ip = 64
sasl_login_timeout_ms = 2000

[[kafka.listeners]]
name = "LAN"
listen = "127.0.0.1:{port}"
security_protocol = "SASL_PLAINTEXT"
""")
    done = subprocess.run([TERN_BIN, "users", "add", "alice", "--data-dir", str(tern.data_dir)],
                          input=PASSWORD + "\n", capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    tern.start()
    rss = [rss_kib(tern.pid())]
    stop = threading.Event()
    opened = [0]

    def flood():
        held = []
        try:
            while opened[0] < 10_000 and not stop.is_set():
                s = socket.socket()
                s.bind(("127.0.0.2", 0))
                s.settimeout(2)
                try:
                    s.connect(("127.0.0.1", port))
                    kind = opened[0] % 3
                    if kind == 1:
                        s.sendall(struct.pack(">i", 64 << 20))  # an oversized frame
                    elif kind == 2:
                        body = struct.pack(">hhi", 3, 1, 1) + struct.pack(">h", 1) + b"x" + struct.pack(">i", -1)
                        s.sendall(struct.pack(">i", len(body)) + body)  # Metadata before login
                except OSError:
                    pass
                opened[0] += 1
                held.append(s)
                if len(held) >= 400:
                    for old in held[:200]:
                        old.close()
                    del held[:200]
                    rss.append(rss_kib(tern.pid()))
        finally:
            for s in held:
                s.close()

    flooder = threading.Thread(target=flood)
    flooder.start()
    try:
        config = {"bootstrap.servers": f"127.0.0.1:{port}", "security.protocol": "SASL_PLAINTEXT",
                  "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "alice", "sasl.password": PASSWORD}
        round_trip(config, "during-flood", 2000)
    finally:
        flooder.join(timeout=300)
    assert opened[0] == 10_000, opened[0]
    rss.append(rss_kib(tern.pid()))
    metrics = tern.metrics()
    rejected = next(float(l.split()[-1]) for l in metrics.splitlines() if l.startswith("tern_connections_rejected_total"))
    print(f"\nflood: {opened[0]} connections from 127.0.0.2, {rejected:.0f} refused at the per-address limit; "
          f"tern RSS {rss[0]} -> {rss[-1]} KiB (max {max(rss)})")
    assert rejected > 0
    assert max(rss) < rss[0] + 64 * 1024, f"RSS grew from {rss[0]} to {max(rss)} KiB"
    tern.kill()


def test_a_renewed_certificate_is_used_without_a_restart(tmp_path):
    """The listener's certificate files are replaced (a renewal, here even by another
    CA): new connections get the new certificate, tern keeps running."""
    import shutil
    first, second = certs(tmp_path / "first"), certs(tmp_path / "second")
    live = tmp_path / "live"
    live.mkdir()
    for name in ("hub.pem", "hub.key"):
        shutil.copy(first / name, live / name)
    port = free_port()
    tern = Tern(tmp_path / "tern", config=f"""
[[kafka.listeners]]
name = "TLS"
listen = "127.0.0.1:{port}"
security_protocol = "SSL"
cert = "{live / 'hub.pem'}"
key = "{live / 'hub.key'}"
""").start()
    try:
        def connects(ca) -> bool:
            p = Producer({"bootstrap.servers": f"127.0.0.1:{port}", "security.protocol": "SSL",
                          "ssl.ca.location": str(ca)})
            try:
                p.list_topics(timeout=5)
                return True
            except KafkaException:
                return False

        assert connects(first / "ca.pem") and not connects(second / "ca.pem")
        for name in ("hub.pem", "hub.key"):
            shutil.copy(second / name, live / name)
        deadline = time.time() + 20
        while not connects(second / "ca.pem"):
            assert time.time() < deadline, "the renewed certificate was never used"
            time.sleep(0.5)
        assert not connects(first / "ca.pem")
        assert "TLS certificate reloaded" in tern.log_text()
    finally:
        tern.kill()
