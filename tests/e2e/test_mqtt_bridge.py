"""The MQTT bridge against a real mosquitto: MQTT devices become keyed tern records with
their MQTT metadata as headers, nothing is lost when tern or mosquitto go down, and tern
records become MQTT commands for the devices."""

import subprocess
import sys
import time
from collections import Counter

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from mosquitto import Mosquitto, bridge_config, wait_subscribed
from mqtt_clients import device, payload

HERE = __import__("pathlib").Path(__file__).parent
SENSORS = {"filter": "sensors/+/temperature", "topic": "sensors", "key": "{1}", "partitions": 3}


def publisher(mosq, count, devices=100, qos=1, v5=False, start=0, pad=0):
    args = [sys.executable, str(HERE / "mqtt_clients.py"), "publish", str(mosq.port), str(count), str(devices), str(qos),
            "--pad", str(pad)]
    if v5:
        args.append("--v5")
    args += ["--start", str(start)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True)


def finish(proc, timeout=600):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0 and "published" in out, f"publisher failed: {out}"


def read_all(bootstrap, topic, expected, timeout=120):
    """Every record of `topic` once `expected` distinct payloads have arrived."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.time()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    records, distinct = [], set()
    deadline = time.time() + timeout
    try:
        while len(distinct) < expected and time.time() < deadline:
            for m in c.consume(1000, timeout=0.5):
                if m.error():
                    continue
                records.append(m)
                distinct.add(m.value())
        return records
    finally:
        c.close()


def seq_of(value):
    return int(value.split(b":", 1)[0])


def test_50k_qos1_messages_become_keyed_records_with_headers(tern_factory, tmp_path):
    mosq = Mosquitto(tmp_path / "mq").start()
    tern = tern_factory(config=bridge_config(mosq, inbound=[SENSORS]))
    wait_subscribed(tern)
    try:
        finish(publisher(mosq, 50_000))
        records = read_all(tern.bootstrap, "sensors", 50_000)
        by_seq = {}
        for m in records:
            by_seq.setdefault(seq_of(m.value()), m)
        assert sorted(by_seq) == list(range(50_000)), "every message arrived"
        partition_of_key = {}
        for i, m in by_seq.items():
            assert m.value() == payload(i), f"message {i} is byte-exact"
            assert m.key() == device(i, 100).encode()
            headers = dict(m.headers())
            assert headers["mqtt.topic"] == f"sensors/{device(i, 100)}/temperature".encode()
            assert headers["mqtt.qos"] == b"1" and headers["mqtt.retain"] == b"false"
            assert partition_of_key.setdefault(m.key(), m.partition()) == m.partition(), "a device stays on one partition"
        # Keys land where Kafka's Java partitioner (murmur2) puts them: check with librdkafka's.
        p = Producer({"bootstrap.servers": tern.bootstrap, "partitioner": "murmur2_random"})
        landed = {}
        for key in list(partition_of_key)[:20]:
            p.produce("sensors", key=key, value=b"probe", on_delivery=lambda e, m: landed.__setitem__(m.key(), m.partition()))
        assert p.flush(30) == 0
        assert all(landed[k] == partition_of_key[k] for k in landed), (landed, partition_of_key)
        print(f"\n50,000 messages → {len(records)} records ({len(records) - 50_000} duplicates)")
    finally:
        mosq.stop()


def count_deliveries(records, n):
    seqs = Counter(seq_of(m.value()) for m in records)
    missing = [i for i in range(n) if i not in seqs]
    return missing, sum(c - 1 for c in seqs.values())


def test_kill_tern_mid_stream_loses_nothing(tern_factory, tmp_path):
    mosq = Mosquitto(tmp_path / "mq").start()
    tern = tern_factory(config=bridge_config(mosq, inbound=[SENSORS]))
    wait_subscribed(tern)
    n = 40_000
    try:
        pub = publisher(mosq, n)
        kills = 0
        for _ in range(3):
            time.sleep(0.7)
            tern.kill()  # kill -9 while the publisher keeps publishing into mosquitto
            kills += 1
            time.sleep(0.3)
            tern.start()
        finish(pub)
        records = read_all(tern.bootstrap, "sensors", n)
        missing, duplicates = count_deliveries(records, n)
        assert not missing, f"{len(missing)} messages lost, e.g. {missing[:10]}"
        # Duplicates can only come from the window appended but not yet acknowledged.
        assert duplicates <= kills * 1000, f"{duplicates} duplicates exceed {kills} × max_inflight"
        print(f"\n{kills} × kill -9: {n} messages, 0 lost, {duplicates} duplicates (unacknowledged window)")
    finally:
        mosq.stop()


def test_mosquitto_restart_mid_stream_loses_nothing(tern_factory, tmp_path):
    mosq = Mosquitto(tmp_path / "mq").start()
    tern = tern_factory(config=bridge_config(mosq, inbound=[SENSORS], extra="reconnect_max_ms = 500"))
    wait_subscribed(tern)
    n = 30_000
    try:
        pub = publisher(mosq, n)
        time.sleep(1.0)
        mosq.stop()  # graceful: mosquitto saves sessions and queued messages
        time.sleep(1.0)
        mosq.start()
        finish(pub)
        records = read_all(tern.bootstrap, "sensors", n)
        missing, duplicates = count_deliveries(records, n)
        assert not missing, f"{len(missing)} messages lost, e.g. {missing[:10]}"
        reconnects = [l for l in tern.metrics().splitlines() if l.startswith("tern_mqtt_reconnects_total") and 'direction="in"' in l]
        assert reconnects and float(reconnects[0].split()[-1]) >= 1, reconnects
        print(f"\nmosquitto restart: {n} messages, 0 lost, {duplicates} duplicates")
    finally:
        mosq.stop()


def subscriber(mosq, topic_filter, out):
    return subprocess.Popen([sys.executable, str(HERE / "mqtt_clients.py"), "subscribe", str(mosq.port), topic_filter, str(out)])


def received_lines(out):
    if not out.exists():
        return []
    return [line.split("\t", 1) for line in out.read_text().splitlines() if "\t" in line]


def test_outbound_commands_reach_devices_through_a_kill(tern_factory, tmp_path):
    mosq = Mosquitto(tmp_path / "mq").start()
    rule = {"topic": "commands", "mqtt_topic": "devices/{key}/cmd", "qos": 1}
    tern = tern_factory(config=bridge_config(mosq, outbound=[rule]))
    out = tmp_path / "cmds.txt"
    sub = subscriber(mosq, "devices/+/cmd", out)
    n = 10_000
    try:
        time.sleep(1)  # the subscriber's session exists before commands flow
        producer = Producer({"bootstrap.servers": tern.bootstrap, "linger.ms": 5})
        for i in range(n // 2):
            producer.produce("commands", key=f"lock-{i % 100}", value=f"open {i}")
        assert producer.flush(30) == 0
        deadline = time.time() + 30
        while len(received_lines(out)) < 1000 and time.time() < deadline:
            time.sleep(0.05)
        tern.kill()  # mid-way
        tern.start()
        producer = Producer({"bootstrap.servers": tern.bootstrap, "linger.ms": 5})
        for i in range(n // 2, n):
            producer.produce("commands", key=f"lock-{i % 100}", value=f"open {i}")
        assert producer.flush(30) == 0

        def distinct():
            return {tuple(l) for l in received_lines(out)}

        deadline = time.time() + 120
        while len(distinct()) < n and time.time() < deadline:
            time.sleep(0.2)
        got = distinct()
        expected = {(f"devices/lock-{i % 100}/cmd", f"open {i}") for i in range(n)}
        assert got == expected, f"{len(expected - got)} commands missing, {len(got - expected)} unexpected"
        total = len(received_lines(out))
        print(f"\noutbound: {n} commands delivered on the right topics, {total - n} duplicates after the kill")
        rows = subprocess.run([TERN_BIN(), "groups", "describe", "tern-mqtt-gw", "--bootstrap-server", tern.bootstrap],
                              capture_output=True, text=True, timeout=60, check=True).stdout
        assert "commands" in rows, rows
    finally:
        sub.terminate()
        sub.wait(timeout=10)
        mosq.stop()


def TERN_BIN():
    from harness import TERN_BIN as binary
    return binary


def make_tls_files(d):
    """A CA and a server certificate for 127.0.0.1 / localhost (openssl CLI)."""
    d.mkdir(parents=True, exist_ok=True)

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=tern test CA",
        "-keyout", "ca.key", "-out", "ca.pem")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "san.ext", "-out", "server.pem")
    return d / "ca.pem", d / "server.pem", d / "server.key"


def password_file(d, users):
    path = d / "passwd"
    path.write_text("".join(f"{u}:{p}\n" for u, p in users.items()))
    subprocess.run(["mosquitto_passwd", "-U", str(path)], check=True)
    return path


def tls_publisher(mosq, ca, user, password):
    import paho.mqtt.client as mqtt
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tls-device", protocol=mqtt.MQTTv5)
    c.tls_set(ca_certs=str(ca))
    c.username_pw_set(user, password)
    c.connect("127.0.0.1", mosq.port)
    c.loop_start()
    return c, mqtt


def test_tls_username_password_mqtt5_user_properties_and_retained(tern_factory, tmp_path):
    ca, cert, key = make_tls_files(tmp_path / "tls")
    passwd = password_file(tmp_path, {"tern": "bridge-secret", "device": "device-secret"})
    mosq = Mosquitto(tmp_path / "mq", tls=(ca, cert, key), password_file=passwd).start()
    device, mqtt = tls_publisher(mosq, ca, "device", "device-secret")
    # A retained state message published before tern exists: ingested once.
    device.publish("sensors/dev-r/temperature", b"retained-state", qos=1, retain=True).wait_for_publish(10)
    extra = (f'protocol = "5"\nusername = "tern"\npassword = "bridge-secret"\n'
             f'[bridges.mqtt.tls]\nca_file = "{ca}"\n')
    tern = tern_factory(config=bridge_config(mosq, inbound=[SENSORS], extra=extra))
    wait_subscribed(tern)
    try:
        infos = []
        for i in range(1000):
            props = mqtt.Properties(mqtt.PacketTypes.PUBLISH)
            props.UserProperty = [("seq", str(i)), ("site", "gw-1")]
            infos.append(device.publish(f"sensors/{device_name(i)}/temperature", payload(i), qos=1, properties=props))
        for info in infos:
            info.wait_for_publish(30)
        records = read_all(tern.bootstrap, "sensors", 1001)
        regular = {seq_of(m.value()): m for m in records if m.value() != b"retained-state"}
        assert sorted(regular) == list(range(1000)), "every message arrived over TLS"
        for i, m in regular.items():
            headers = dict(m.headers())
            assert headers["seq"] == str(i).encode() and headers["site"] == b"gw-1", "MQTT 5 user properties become headers"
        retained = [m for m in records if m.value() == b"retained-state"]
        assert len(retained) == 1 and dict(retained[0].headers())["mqtt.retain"] == b"true"

        tern.stop()  # the session survives; the retained message must not come back
        tern.start()
        device.publish("sensors/dev-x/temperature", b"after-restart", qos=1).wait_for_publish(10)
        after = read_all(tern.bootstrap, "sensors", 1002)
        assert sum(m.value() == b"retained-state" for m in after) == 1, "a resumed session does not re-ingest retained messages"
        assert any(m.value() == b"after-restart" for m in after)
        assert "session_present=true" in tern.log_text()
    finally:
        device.loop_stop()
        mosq.stop()


def device_name(i):
    return device(i, 100)


def test_wrong_password_and_unreachable_broker_are_reported_and_kafka_keeps_working(tern_factory, tmp_path):
    passwd = password_file(tmp_path, {"tern": "right"})
    mosq = Mosquitto(tmp_path / "mq", password_file=passwd).start()
    from harness import free_port
    closed_port = free_port()
    config = bridge_config(mosq, name="badpw", inbound=[SENSORS], extra='username = "tern"\npassword = "wrong"\nreconnect_max_ms = 300')
    config += bridge_config(mosq, name="nobroker", inbound=[{"filter": "x/#", "topic": "x"}], extra="reconnect_max_ms = 300").replace(
        f"port = {mosq.port}", f"port = {closed_port}")
    tern = tern_factory(config=config)
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            log = tern.log_text()
            if "bridge=badpw" in log and "bridge=nobroker" in log and log.count("reconnecting in") >= 4:
                break
            time.sleep(0.2)
        log = tern.log_text()
        bad_pw = [l for l in log.splitlines() if "bridge=badpw" in l and "connection lost" in l]
        no_broker = [l for l in log.splitlines() if "bridge=nobroker" in l and "connection lost" in l]
        assert bad_pw and ("NotAuthorized" in bad_pw[0] or "BadUserNamePassword" in bad_pw[0]), bad_pw[:2]
        assert no_broker and "Connection refused" in no_broker[0] and str(closed_port) in no_broker[0], no_broker[:2]
        metrics = tern.metrics()
        assert 'tern_mqtt_connected{bridge="nobroker",direction="in"} 0' in metrics
        # The broker itself is unaffected.
        p = Producer({"bootstrap.servers": tern.bootstrap})
        p.produce("still-up", b"ok")
        assert p.flush(30) == 0
    finally:
        mosq.stop()


@pytest.mark.parametrize("text, message", [
    ('[[bridges.mqtt]]\nname = "gw"\n[[bridges.mqtt.inbound]]\nfilter = "sensors/#/x"\ntopic = "s"\n', "`#` must be the last level"),
    ('[[bridges.mqtt]]\nname = "gw"\n[[bridges.mqtt.inbound]]\nfilter = "sensors/+/t"\ntopic = "s"\nkey = "{2}"\n', "names `{2}` but filter `sensors/+/t` has 1 `+` level"),
    ('[[bridges.mqtt]]\nname = "gw"\nkeepalive = 3\n', "unknown field `keepalive`"),
    ('[[bridges.mqtt]]\nname = "gw"\n[[bridges.mqtt.outbound]]\ntopic = "c"\nmqtt_topic = "devices/+/cmd"\n', "must not contain MQTT wildcards"),
    ('[[bridges.mqtt]]\nname = "gw"\n[bridges.mqtt.tls]\nca_file = "/nonexistent/ca.pem"\n[[bridges.mqtt.inbound]]\nfilter = "a"\ntopic = "a"\n', "/nonexistent/ca.pem does not exist"),
])
def test_bad_bridge_config_is_refused_with_a_clear_message(tmp_path, text, message):
    from harness import TERN_BIN as binary
    path = tmp_path / "bad.toml"
    path.write_text(text)
    check = subprocess.run([binary, "config", "check", str(path)], capture_output=True, text=True, timeout=30)
    assert check.returncode != 0 and message in check.stderr, check.stderr
    serve = subprocess.run([binary, "serve", "--config", str(path)], capture_output=True, text=True, timeout=30)
    assert serve.returncode != 0 and message in serve.stderr, serve.stderr


def test_full_disk_withholds_pubacks_and_nothing_is_lost_when_space_returns(tmp_path):
    """tern's data on a small tmpfs (needs root; fails, never skips): while the disk is
    full the bridge withholds PUBACKs, the messages wait in mosquitto, and all of them
    arrive once space returns — without restarting anything."""
    from harness import Tern
    from test_disk import FS_MIB, mount_tmpfs

    fs = tmp_path / "fs"
    mount_tmpfs(fs)
    mosq = Mosquitto(tmp_path / "mq").start()
    tern = Tern(tmp_path / "work", config=f'[broker]\ndata_dir = "{fs / "data"}"\n' + bridge_config(mosq, inbound=[SENSORS]))
    n = 6_000
    try:
        tern.start()
        wait_subscribed(tern)
        filler = fs / "filler"
        filler.write_bytes(b"\0" * ((FS_MIB - 3) * 1024 * 1024))  # ~3 MiB left
        finish(publisher(mosq, n, pad=1024))  # ~6 MiB of incompressible messages
        deadline = time.time() + 60
        while "PUBACKs withheld" not in tern.log_text() and time.time() < deadline:
            time.sleep(0.2)
        assert "PUBACKs withheld" in tern.log_text(), "the disk never filled up"
        metric = [l for l in tern.metrics().splitlines() if l.startswith("tern_mqtt_acked_total")]
        acked = float(metric[0].split()[-1])
        assert acked < n, f"{acked} acknowledged although the disk is full"
        filler.unlink()  # space returns
        records = read_all(tern.bootstrap, "sensors", n, timeout=120)
        missing, duplicates = count_deliveries(records, n)
        assert not missing, f"{len(missing)} messages lost, e.g. {missing[:10]}"
        print(f"\nfull disk: {int(acked)} acknowledged before the disk filled, all {n} stored after, {duplicates} duplicates")
    finally:
        tern.kill()
        mosq.stop()
        subprocess.run(["umount", "-l", str(fs)], check=False)
