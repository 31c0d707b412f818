"""MQTT publisher and subscriber processes for the bridge tests (paho-mqtt), run as their
own processes so a test can kill tern or mosquitto while they keep going.

    python3 mqtt_clients.py publish PORT COUNT DEVICES QOS [--v5] [--start N] [--pad BYTES]
        publishes messages N..N+COUNT-1 to sensors/dev-<i % DEVICES>/temperature, waits
        for every PUBACK (reconnecting through broker restarts), prints "published COUNT"
    python3 mqtt_clients.py subscribe PORT FILTER OUTFILE
        appends "topic<TAB>payload" lines for every message received (QoS 1)
"""

import collections
import random
import sys
import time

import paho.mqtt.client as mqtt


def payload(i, pad=0):
    """Message i's bytes: its number, then binary bytes (all 256 values over the run),
    then `pad` incompressible bytes."""
    body = f"{i}:".encode() + bytes((i * 7 + j) % 256 for j in range(i % 64))
    return body + random.Random(i).randbytes(pad) if pad else body


def device(i, devices):
    return f"dev-{i % devices}"


def connect(port, client_id, clean, v5=False):
    protocol = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
    kwargs = {} if v5 else {"clean_session": clean}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, **kwargs)
    client.max_inflight_messages_set(200)
    client.max_queued_messages_set(0)
    client.reconnect_delay_set(0.1, 1)
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    return client


def publish(port, count, devices, qos, v5, start, pad=0):
    client = connect(port, f"publisher-{start}", clean=False, v5=v5)
    pending = collections.deque()
    deadline = time.time() + 600

    def settle(limit):
        # paho's message ids wrap at 65535: keep fewer unacknowledged than that.
        while len(pending) > limit:
            info = pending.popleft()
            while qos > 0 and not info.is_published():
                if time.time() > deadline:
                    sys.exit("publisher: messages never acknowledged")
                time.sleep(0.005)

    for i in range(start, start + count):
        props = None
        if v5:
            props = mqtt.Properties(mqtt.PacketTypes.PUBLISH)
            props.UserProperty = [("seq", str(i))]
        pending.append(client.publish(f"sensors/{device(i, devices)}/temperature", payload(i, pad), qos=qos, properties=props))
        settle(30_000)
    settle(0)
    client.loop_stop()
    client.disconnect()
    print(f"published {count}", flush=True)


def subscribe(port, topic_filter, outfile):
    out = open(outfile, "a", buffering=1)

    def on_connect(client, userdata, flags, reason, properties):
        client.subscribe(topic_filter, qos=1)

    def on_message(client, userdata, message):
        out.write(f"{message.topic}\t{message.payload.decode(errors='replace')}\n")

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="cmd-subscriber", clean_session=False)
    client.on_connect = on_connect
    client.on_message = on_message
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_forever()


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "publish":
        port, count, devices, qos = map(int, sys.argv[2:6])
        start = int(sys.argv[sys.argv.index("--start") + 1]) if "--start" in sys.argv else 0
        pad = int(sys.argv[sys.argv.index("--pad") + 1]) if "--pad" in sys.argv else 0
        publish(port, count, devices, qos, "--v5" in sys.argv, start, pad)
    elif command == "subscribe":
        subscribe(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        sys.exit(f"unknown command {command}")
