"""ACLs with real clients. A tern with [kafka.authorization] on, a SASL_PLAINTEXT listener
(users alice, bob, admin; admin is a super user) and an SSL listener that requires client
certificates. ACLs are managed by librdkafka's admin API (CreateAcls/DescribeAcls/
DeleteAcls) and by `tern acls`; librdkafka and kafka-python get Kafka's authorization
errors, and a refused request changes nothing."""

import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType,
                                   AdminClient, ResourcePatternType, ResourceType)

from harness import TERN_BIN, Tern, free_port

PASSWORDS = {"alice": "alice-pw-1", "bob": "bob-pw-2", "admin": "admin-pw-3"}


def tern_cli(*args, input=None):
    done = subprocess.run([TERN_BIN, *args], input=input, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def guarded(tmp_path):
    certs = tmp_path / "certs"
    tern_cli("certs", "ca", "--dir", str(certs))
    tern_cli("certs", "hub", "--name", "localhost", "--name", "127.0.0.1", "--dir", str(certs))
    for device in ("door-7", "cam-1"):
        tern_cli("certs", "client", device, "--dir", str(certs))
    sasl_port, ssl_port = free_port(), free_port()
    tern = Tern(tmp_path / "tern", config=f"""
[groups]
initial_rebalance_delay_ms = 200
min_session_timeout_ms = 1000

[[kafka.listeners]]
name = "LAN"
listen = "127.0.0.1:{sasl_port}"
security_protocol = "SASL_PLAINTEXT"
sasl_mechanisms = ["PLAIN"]

[[kafka.listeners]]
name = "DEVICES"
listen = "127.0.0.1:{ssl_port}"
security_protocol = "SSL"
cert = "{certs / 'hub.pem'}"
key = "{certs / 'hub.key'}"
ssl_client_auth = "required"
client_ca = "{certs / 'ca.pem'}"
ssl_principal_mapping_rules = "RULE:^CN=([^,]*)$/device-$1/,DEFAULT"

[kafka.authorization]
enabled = true
super_users = ["User:admin"]
""")
    for user, password in PASSWORDS.items():
        tern_cli("users", "add", user, "--data-dir", str(tern.data_dir), input=password + "\n")
    tern.start()
    tern.sasl_bootstrap = f"127.0.0.1:{sasl_port}"
    tern.ssl_bootstrap = f"127.0.0.1:{ssl_port}"
    tern.certs = certs
    yield tern
    tern.kill()


def login(tern, user: str) -> dict:
    return {"bootstrap.servers": tern.sasl_bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN", "sasl.username": user, "sasl.password": PASSWORDS[user]}


def admin(tern, user="admin") -> AdminClient:
    return AdminClient(login(tern, user))


def allow(principal, resource_type, name, operation, pattern=ResourcePatternType.LITERAL):
    return AclBinding(resource_type, name, pattern, principal, "*", operation, AclPermissionType.ALLOW)


def produce(config: dict, topic: str, count: int) -> list:
    """Delivery results: None for each record acknowledged, else the KafkaError."""
    results = []
    producer = Producer({**config, "acks": "all", "message.timeout.ms": 10000})
    for i in range(count):
        producer.produce(topic, value=f"v{i}".encode(), on_delivery=lambda err, msg: results.append(err))
    producer.flush(30)
    return results


def consume(config: dict, topic: str, group: str, want: int, seconds: float = 20):
    """(values read, first error seen) for a group consumer that commits what it read."""
    consumer = Consumer({**config, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    values, error = [], None
    deadline = time.time() + seconds
    while time.time() < deadline and len(values) < want and error is None:
        m = consumer.poll(0.2)
        if m is None:
            continue
        if m.error():
            error = m.error()
        else:
            values.append(m.value())
    if values:
        consumer.commit(asynchronous=False)
    consumer.close()
    return values, error


def end_offset(tern, topic: str) -> int:
    consumer = Consumer({**login(tern, "admin"), "group.id": "probe"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        consumer.close()


def test_write_without_read_and_read_with_one_group_only(guarded):
    boss = admin(guarded)
    created = boss.create_acls([
        allow("User:alice", ResourceType.TOPIC, "sensors", AclOperation.WRITE),
        allow("User:alice", ResourceType.BROKER, "kafka-cluster", AclOperation.CREATE),
        allow("User:bob", ResourceType.TOPIC, "sensors", AclOperation.READ),
        allow("User:bob", ResourceType.GROUP, "dashboard", AclOperation.READ),
    ])
    for future in created.values():
        future.result(timeout=10)
    described = boss.describe_acls(AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
        AclPermissionType.ANY)).result(timeout=10)
    assert len(described) == 4, described

    # alice writes sensors (auto-created: she may create topics) ...
    alice = login(guarded, "alice")
    assert produce(alice, "sensors", 100) == [None] * 100
    # ... but may not read it,
    values, error = consume(alice, "sensors", "alice-group", 1)
    assert values == [] and error is not None
    assert error.code() in (KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError.TOPIC_AUTHORIZATION_FAILED), error
    # nor write a topic she was not given.
    denied = produce(alice, "doors", 3)
    assert [e.code() for e in denied] == [KafkaError.TOPIC_AUTHORIZATION_FAILED] * 3, denied

    # bob reads sensors with the group `dashboard` ...
    bob = login(guarded, "bob")
    values, error = consume(bob, "sensors", "dashboard", 100)
    assert error is None and len(values) == 100
    # ... and not with another group,
    values, error = consume(bob, "sensors", "other", 1)
    assert values == [] and error is not None and error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, error
    # and may not write it.
    denied = produce(bob, "sensors", 2)
    assert [e.code() for e in denied] == [KafkaError.TOPIC_AUTHORIZATION_FAILED] * 2, denied

    # Nothing else changed: the log, the topics, the groups' offsets.
    assert end_offset(guarded, "sensors") == 100
    topics = boss.list_topics(timeout=10).topics
    assert "doors" not in topics and "sensors" in topics
    consumer = Consumer({**login(guarded, "admin"), "group.id": "dashboard"})
    assert consumer.committed([TopicPartition("sensors", 0)], timeout=10)[0].offset == 100
    consumer.close()
    consumer = Consumer({**login(guarded, "admin"), "group.id": "other"})
    assert consumer.committed([TopicPartition("sensors", 0)], timeout=10)[0].offset < 0
    consumer.close()

    # Metadata shows alice only what she may describe (WRITE implies DESCRIBE).
    seen = Producer(alice).list_topics(timeout=10).topics
    assert set(seen) == {"sensors"}, set(seen)

    # Only principals with ALTER on the cluster manage ACLs.
    bob_admin = admin(guarded, "bob")
    refused = bob_admin.create_acls(
        [allow("User:bob", ResourceType.TOPIC, "*", AclOperation.ALL)])
    for future in refused.values():
        with pytest.raises(KafkaException) as raised:
            future.result(timeout=10)
        assert raised.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED

    # Deleting alice's WRITE takes effect on the next request.
    deleted = boss.delete_acls([AclBindingFilter(
        ResourceType.TOPIC, "sensors", ResourcePatternType.LITERAL, "User:alice", None,
        AclOperation.WRITE, AclPermissionType.ANY)])
    for future in deleted.values():
        assert len(future.result(timeout=10)) == 1
    denied = produce(alice, "sensors", 1)
    assert [e.code() for e in denied] == [KafkaError.TOPIC_AUTHORIZATION_FAILED], denied
    assert end_offset(guarded, "sensors") == 100


def test_kafka_python_sees_the_same_authorization_errors(guarded):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError

    tern_cli("acls", "add", "--data-dir", str(guarded.data_dir), "--allow-principal", "User:bob",
             "--consumer", "--topic", "sensors", "--group", "dashboard")
    tern_cli("acls", "add", "--data-dir", str(guarded.data_dir), "--allow-principal", "User:alice",
             "--producer", "--topic", "sensors")
    time.sleep(1.5)  # a running tern re-reads acls.json within a second
    common = {"bootstrap_servers": guarded.sasl_bootstrap, "security_protocol": "SASL_PLAINTEXT",
              "sasl_mechanism": "PLAIN"}
    producer = KafkaProducer(**common, sasl_plain_username="alice", sasl_plain_password=PASSWORDS["alice"],
                             acks="all")
    for i in range(10):
        producer.send("sensors", f"v{i}".encode()).get(timeout=20)
    with pytest.raises(TopicAuthorizationFailedError):
        producer.send("doors", b"x").get(timeout=20)
    producer.close()

    consumer = KafkaConsumer("sensors", **common, sasl_plain_username="bob",
                             sasl_plain_password=PASSWORDS["bob"], group_id="dashboard",
                             auto_offset_reset="earliest", consumer_timeout_ms=10000)
    assert len([m for m in consumer][:10]) == 10
    consumer.close()
    other = KafkaConsumer("sensors", **common, sasl_plain_username="bob",
                          sasl_plain_password=PASSWORDS["bob"], group_id="other",
                          auto_offset_reset="earliest")
    with pytest.raises(GroupAuthorizationFailedError):
        other.poll(timeout_ms=10000)
        other.poll(timeout_ms=5000)
    other.close()
    assert end_offset(guarded, "sensors") == 10
    assert "tern_authorization_denied_total" in guarded.metrics()


def test_client_certificates_name_the_principal(guarded):
    certs = guarded.certs
    tern_cli("acls", "add", "--data-dir", str(guarded.data_dir), "--allow-principal", "User:device-door-7",
             "--producer", "--topic", "door-", "--resource-pattern-type", "prefixed")
    listed = tern_cli("acls", "list", "--data-dir", str(guarded.data_dir), "--topic", "door-")
    assert "User:device-door-7 WRITE" in listed, listed
    time.sleep(1.5)

    def device(name):
        return {"bootstrap.servers": guarded.ssl_bootstrap, "security.protocol": "SSL",
                "ssl.ca.location": str(certs / "ca.pem"),
                "ssl.certificate.location": str(certs / f"{name}.pem"),
                "ssl.key.location": str(certs / f"{name}.key")}

    assert produce(device("door-7"), "door-events", 5) == [None] * 5
    denied = produce(device("cam-1"), "door-events", 1)
    assert [e.code() for e in denied] == [KafkaError.TOPIC_AUTHORIZATION_FAILED], denied
    # No client certificate: the TLS handshake itself is refused.
    errors = []
    anonymous = Producer({"bootstrap.servers": guarded.ssl_bootstrap, "security.protocol": "SSL",
                          "ssl.ca.location": str(certs / "ca.pem"), "error_cb": lambda e: errors.append(str(e))})
    with pytest.raises(KafkaException):
        anonymous.list_topics(timeout=3)
    deadline = time.time() + 10
    while not errors and time.time() < deadline:
        anonymous.poll(0.2)
    assert errors, "librdkafka reported nothing for a refused handshake"
    assert end_offset(guarded, "door-events") == 5
