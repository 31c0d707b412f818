"""A small UDP proxy between an edge and its hub, standing in for a bad WAN link (the
kernel here has no netem): delay, random loss, a blackhole, and a NAT rebinding (the
edge's traffic suddenly arrives at the hub from a new source port)."""

import heapq
import random
import selectors
import socket
import threading
import time


class UdpProxy:
    def __init__(self, target: tuple, seed: int = 7):
        self.target = target
        self.down = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.down.bind(("127.0.0.1", 0))
        self.port = self.down.getsockname()[1]
        self.up = self._upstream()
        self.edge_addr = None
        self.delay_s = 0.0
        self.loss = 0.0
        self.blackhole = False
        self.forwarded = 0
        self.dropped = 0
        self.rebinds = 0
        self._random = random.Random(seed)
        self._queue = []  # (due, seq, socket, payload, address)
        self._seq = 0
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._receive, daemon=True),
                         threading.Thread(target=self._send, daemon=True)]
        for t in self._threads:
            t.start()

    def _upstream(self) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        return s

    def impair(self, delay_ms: float = 0, loss: float = 0.0, blackhole: bool = False):
        with self._lock:
            self.delay_s = delay_ms / 1000.0
            self.loss = loss
            self.blackhole = blackhole

    def rebind(self):
        """The edge's NAT mapping changes: its packets reach the hub from a new port."""
        with self._lock:
            self.up = self._upstream()
            self.rebinds += 1

    def _enqueue(self, sock, payload, address):
        with self._lock:
            if self.blackhole or self._random.random() < self.loss:
                self.dropped += 1
                return
            self._seq += 1
            heapq.heappush(self._queue, (time.monotonic() + self.delay_s, self._seq, sock, payload, address))
            self._lock.notify()

    def _receive(self):
        sel = selectors.DefaultSelector()
        sel.register(self.down, selectors.EVENT_READ)
        registered = None
        while not self._stop.is_set():
            with self._lock:
                up = self.up
            if up is not registered:
                if registered is not None:
                    sel.unregister(registered)
                sel.register(up, selectors.EVENT_READ)
                registered = up
            for key, _ in sel.select(timeout=0.05):
                try:
                    payload, address = key.fileobj.recvfrom(65536)
                except (BlockingIOError, OSError):
                    continue
                if key.fileobj is self.down:
                    self.edge_addr = address
                    self._enqueue(up, payload, self.target)
                elif key.fileobj is up and self.edge_addr is not None:
                    self._enqueue(self.down, payload, self.edge_addr)

    def _send(self):
        while not self._stop.is_set():
            with self._lock:
                while not self._queue and not self._stop.is_set():
                    self._lock.wait(0.1)
                if not self._queue:
                    continue
                due = self._queue[0][0]
                now = time.monotonic()
                if due > now:
                    self._lock.wait(due - now)
                    continue
                _, _, sock, payload, address = heapq.heappop(self._queue)
            try:
                sock.sendto(payload, address)
                self.forwarded += 1
            except OSError:
                self.dropped += 1

    def close(self):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        self.down.close()
        self.up.close()
