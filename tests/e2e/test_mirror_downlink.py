"""Hub → edge: command topics produced at the hub reach the edge over the connection the
edge opened (the hub cannot reach a gateway behind NAT), with the same guarantees as the
way up — same offsets, exactly once across kill -9 of either side — and the edge's MQTT
bridge publishes them to the devices."""

import subprocess
import sys
import time

from confluent_kafka import KafkaException, Producer

from mirror_site import mirror_pair, mirror_status, read_all, status_text, wait_until, watermarks
from mosquitto import Mosquitto, bridge_config
from test_mqtt_bridge import HERE, received_lines

COMMANDS = 10_000


def produce_commands(bootstrap: str, topic: str, start: int, count: int):
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                         "enable.idempotence": True, "compression.type": "lz4"})
    for i in range(start, start + count):
        while True:
            try:
                producer.produce(topic, key=f"lock-{i % 100}", value=f"open {i}")
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0, f"commands {start}..{start + count} not acknowledged by the hub"


def end_of(bootstrap: str, topic: str) -> int:
    marks = watermarks(bootstrap, topic)
    return marks.get(0, (0, -1))[1]


def test_commands_produced_at_the_hub_reach_the_edge_and_its_devices_exactly_once(tmp_path):
    mosq = Mosquitto(tmp_path / "mq").start()
    rule = {"topic": "commands", "mqtt_topic": "devices/{key}/cmd", "qos": 1, "start_from": "earliest"}
    out = tmp_path / "cmds.txt"
    sub = subprocess.Popen([sys.executable, str(HERE / "mqtt_clients.py"), "subscribe", str(mosq.port),
                            "devices/+/cmd", str(out)])
    try:
        with mirror_pair(tmp_path, extra=bridge_config(mosq, outbound=[rule])) as (certs, hub, edge):
            time.sleep(1)  # the subscriber's session exists before commands flow
            quarter = COMMANDS // 4
            produce_commands(hub.bootstrap, "commands.gw-1", 0, quarter)
            wait_until(lambda: end_of(edge.bootstrap, "commands") >= quarter // 2, 60,
                       "the first commands on the edge")
            edge.kill()  # kill -9 of the edge while commands flow down
            produce_commands(hub.bootstrap, "commands.gw-1", quarter, quarter)
            edge.start()
            wait_until(lambda: end_of(edge.bootstrap, "commands") >= 2 * quarter - 100, 60,
                       "commands after the edge's restart")
            produce_commands(hub.bootstrap, "commands.gw-1", 2 * quarter, quarter)
            hub.kill()  # kill -9 of the hub
            hub.start()
            produce_commands(hub.bootstrap, "commands.gw-1", 3 * quarter, quarter)
            # One command for every edge, on its own topic.
            produce_commands(hub.bootstrap, "commands.all", 0, 10)

            wait_until(lambda: end_of(edge.bootstrap, "commands") == COMMANDS, 120,
                       "all commands on the edge")
            wait_until(lambda: end_of(edge.bootstrap, "commands.all") == 10, 60, "commands.all on the edge")
            at_hub = read_all(hub.bootstrap, "commands.gw-1")
            at_edge = read_all(edge.bootstrap, "commands")
            assert len(at_edge[0]) == COMMANDS
            assert at_edge == at_hub, "the edge's commands differ from the hub's (offset, key, value, headers, ts)"
            values = [r[2] for r in at_edge[0]]
            assert values == [f"open {i}".encode() for i in range(COMMANDS)], "order or content differs"
            assert read_all(edge.bootstrap, "commands.all") == read_all(hub.bootstrap, "commands.all")

            # The MQTT bridge of the edge publishes them to the locks.
            def distinct():
                return {tuple(line) for line in received_lines(out)}

            wait_until(lambda: len(distinct()) >= COMMANDS, 120, "every command on MQTT")
            expected = {(f"devices/lock-{i % 100}/cmd", f"open {i}") for i in range(COMMANDS)}
            assert distinct() == expected

            # The downlink shows in both statuses; commands are not mirrored back up.
            status = mirror_status(edge)["edge"]
            down = status["downlink"]["commands/0"]
            assert down["edge_end"] == COMMANDS and down["records_behind"] == 0, down
            assert not any(p["topic"].startswith("commands") for p in status["partitions"].values())
            hub_side = mirror_status(hub)["hub"]["edges"]["gw-1"]["downlink"]["commands.gw-1/0"]
            assert hub_side["edge_end"] == COMMANDS and hub_side["edge_topic"] == "commands", hub_side
            assert "commands.gw-1 -> commands" in status_text(hub) and "DOWNLINK" in status_text(edge)
            assert "gw-1.commands" not in {t for t in watermarks_topics(hub)}

            # Only the hub writes the edge's command topic: a local producer is refused.
            local = Producer({"bootstrap.servers": edge.bootstrap, "message.timeout.ms": 5000,
                              "retries": 0})
            errors = []
            local.produce("commands", value=b"forged", on_delivery=lambda err, msg: errors.append(err))
            local.flush(10)
            assert errors and errors[0] is not None and "AUTHORIZATION" in errors[0].name(), errors
            print(f"\ndownlink: {COMMANDS} commands at the same offsets on the edge through a kill -9 of "
                  f"each side; {len(received_lines(out)) - COMMANDS} MQTT duplicates after the kills")
    finally:
        sub.terminate()
        sub.wait(timeout=10)
        mosq.stop()


def watermarks_topics(tern) -> set:
    from confluent_kafka.admin import AdminClient

    try:
        return set(AdminClient({"bootstrap.servers": tern.bootstrap}).list_topics(timeout=10).topics)
    except KafkaException:
        return set()
