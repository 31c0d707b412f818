"""One consumer-group member as its own process (so a test can kill -9 it): consumes a
topic with librdkafka, commits after processing, and appends to a file one line per
record processed, "D partition offset time", and one per partition whose commit the
broker acknowledged, "C partition committed-offset time". Paced at MAX_RATE records/s, so
that a test can act while the members are mid-way on any machine (unpaced, three members
could read a whole test topic before a loaded CI machine got round to the kill).

    python3 group_member.py BOOTSTRAP GROUP TOPIC OUTFILE ASSIGNOR [INSTANCE_ID]
"""

import signal
import sys
import time

from confluent_kafka import Consumer

MAX_RATE = 20_000


def main():
    bootstrap, group, topic, outfile, assignor = sys.argv[1:6]
    instance = sys.argv[6] if len(sys.argv) > 6 else None
    config = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "partition.assignment.strategy": assignor,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
    }
    if instance:
        config["group.instance.id"] = instance
    consumer = Consumer(config)
    consumer.subscribe([topic])
    running = [True]
    signal.signal(signal.SIGTERM, lambda *_: running.__setitem__(0, False))
    with open(outfile, "a", buffering=1) as out:
        while running[0]:
            msgs = consumer.consume(500, timeout=0.2)
            if not msgs:
                continue
            time.sleep(len(msgs) / MAX_RATE)
            for m in msgs:
                if m.error():
                    print(f"consumer error: {m.error()}", file=sys.stderr)
                    continue
                out.write(f"D {m.partition()} {m.offset()} {time.time()}\n")
            out.flush()
            try:
                acked = consumer.commit(asynchronous=False)
            except Exception as e:  # a commit refused during a rebalance is retried later
                print(f"commit failed: {e}", file=sys.stderr)
                continue
            now = time.time()
            for tp in acked or []:
                if tp.error is None and tp.offset >= 0:
                    out.write(f"C {tp.partition} {tp.offset} {now}\n")
    consumer.close()  # LeaveGroup


if __name__ == "__main__":
    main()
