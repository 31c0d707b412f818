"""Hostile and confused peers on the Kafka port: each gets a clear log line and a closed
connection (or an error code), while a real client keeps being served and memory stays
bounded."""

import socket
import struct
import threading
import time

from confluent_kafka import Producer

from harness import rss_kib


def frame(api_key: int, version: int, correlation: int, body: bytes, client_id: bytes = b"bad") -> bytes:
    header = struct.pack(">hhih", api_key, version, correlation, len(client_id)) + client_id
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def closed_by_server(port: int, data: bytes, then_close: bool = False, timeout: float = 5.0) -> bool:
    """Sends data; True when the server closes the connection (EOF or reset)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if then_close:
            s.shutdown(socket.SHUT_WR)
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False


def read_response(sock: socket.socket) -> bytes:
    size = struct.unpack(">i", recv_exact(sock, 4))[0]
    return recv_exact(sock, size)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, "connection closed"
        out += chunk
    return out


CASES = {
    "garbage body": (frame(3, 1, 5, b"\x00\x00\x00\x05\xff\x13"), "malformed Metadata v1 request"),
    "garbage header": (b"\x00\x00\x00\x10" + bytes(range(16)), "Fetch v515 is not supported"),
    "2 GB length prefix": (b"\x7f\xff\xff\xff" + b"\x00" * 8, "request size 2147483647 is outside"),
    "negative length": (b"\xff\xff\xff\xf0", "request size -16 is outside"),
    "unknown api key": (frame(999, 0, 1, b""), "unknown API key 999"),
    "unsupported api": (frame(24, 0, 1, b""), "AddPartitionsToTxn (key 24) is not supported"),
    "unsupported version": (frame(3, 99, 1, b""), "Metadata v99 is not supported"),
    "tls client hello": (bytes.fromhex("160301020001000200"), "TLS handshake"),
    "http request": (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP request"),
    "huge array count": (frame(3, 0, 7, b"\x03\x3c\x0c\x00\xb6"), "malformed Metadata v0 request"),
    "huge compact array": (frame(3, 12, 7, b"\x00\xff\xff\xff\xff\x0f"), "malformed"),
}


def test_bad_requests_close_the_connection_with_a_clear_log_line(tern):
    rss_before = rss_kib(tern.pid())
    stop = threading.Event()
    acked = []

    failures = []

    def keep_producing():
        try:
            produce_until_stopped()
        except Exception as e:  # surfaced by the main thread
            failures.append(repr(e))

    def produce_until_stopped():
        p = Producer({"bootstrap.servers": tern.bootstrap, "acks": "all", "linger.ms": 1})
        i = 0
        while not stop.is_set():
            p.produce("good", value=f"v{i}".encode(), on_delivery=lambda err, msg: acked.append(err is None))
            p.poll(0.001)
            i += 1
            if i % 100 == 0:
                time.sleep(0.01)
        p.flush(30)

    worker = threading.Thread(target=keep_producing)
    worker.start()
    try:
        for _ in range(20):  # repeated, to show nothing accumulates
            for name, (data, _) in CASES.items():
                assert closed_by_server(tern.kafka_port, data), f"{name}: connection left open"
        # A truncated frame: the client announces 100 bytes, sends 10 and hangs up.
        assert closed_by_server(tern.kafka_port, b"\x00\x00\x00\x64" + b"\x00" * 10, then_close=True)
    finally:
        stop.set()
        worker.join(timeout=60)
    log = tern.log_text()
    for name, (_, expect) in CASES.items():
        assert expect in log, f"{name}: no log line containing {expect!r}"
    assert "connection closed in the middle of a request" in log
    assert not failures, failures
    assert acked and all(acked), "the well-behaved producer must keep being served"
    rss_after = rss_kib(tern.pid())
    assert rss_after < rss_before + 64 * 1024, f"RSS grew from {rss_before} KiB to {rss_after} KiB"
    assert "tern_bad_requests_total" in tern.metrics()


def test_unknown_api_versions_version_gets_v0_answer_with_our_ranges(tern):
    with socket.create_connection(("127.0.0.1", tern.kafka_port), timeout=5) as s:
        s.sendall(frame(18, 99, 42, b""))
        body = read_response(s)
    correlation, error_code, count = struct.unpack(">ihi", body[:10])
    assert correlation == 42
    assert error_code == 35, "UNSUPPORTED_VERSION"
    keys = {struct.unpack(">h", body[10 + 6 * i: 12 + 6 * i])[0] for i in range(count)}
    assert {0, 1, 2, 3, 18} <= keys, keys


def test_pipelined_requests_are_answered_in_order(tern):
    """Ten ApiVersions and Metadata requests written at once come back in request order."""
    requests = b"".join(frame(18 if i % 2 else 3, 0, 1000 + i, b"" if i % 2 else b"\x00\x00\x00\x00") for i in range(10))
    with socket.create_connection(("127.0.0.1", tern.kafka_port), timeout=5) as s:
        s.sendall(requests)
        correlations = [struct.unpack(">i", read_response(s)[:4])[0] for _ in range(10)]
    assert correlations == list(range(1000, 1010))


def test_connection_limit_refuses_extra_connections(tern_factory):
    tern = tern_factory(config="[kafka]\nmax_connections = 4\n")
    held = [socket.create_connection(("127.0.0.1", tern.kafka_port), timeout=5) for _ in range(4)]
    time.sleep(0.2)
    try:
        assert closed_by_server(tern.kafka_port, frame(18, 0, 1, b""))
        assert "kafka.max_connections reached" in tern.log_text()
    finally:
        for s in held:
            s.close()
