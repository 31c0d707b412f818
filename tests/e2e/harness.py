"""Start and stop real tern processes for end-to-end tests.

Every tern gets its own data directory and ephemeral loopback ports. A test that cannot
start tern fails with the broker's own log in the message: nothing is skipped.
"""

import os
import pathlib
import re
import signal
import socket
import subprocess
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
TERN_BIN = os.environ.get("TERN_BIN", str(ROOT / "target" / "release" / "tern"))


def free_port() -> int:
    """An ephemeral loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Tern:
    """One tern broker process. Ports stay the same across restarts, so clients that
    were connected reconnect to the restarted broker as they would in production."""

    def __init__(self, workdir: pathlib.Path, config: str = "", name: str = "tern",
                 binary: str = TERN_BIN, runner: tuple = ()):
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.kafka_port = free_port()
        self.http_port = free_port()
        self.extra_config = config
        self.name = name
        self.proc = None
        self.log_path = self.workdir / f"{name}.log"
        self.starts = 0
        # A foreign-architecture binary runs under an emulator such as qemu-aarch64.
        self.binary = binary
        self.runner = list(runner)
        # Extra environment for the next starts (test hooks such as TERN_TEST_CLEANER_ABORT_AT).
        self.env: dict[str, str] = {}

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def config_text(self) -> str:
        base = f"""
[broker]
data_dir = "{self.data_dir}"

[kafka]
listen = "127.0.0.1:{self.kafka_port}"

[http]
listen = "127.0.0.1:{self.http_port}"
"""
        return merge_toml(base, self.extra_config)

    def start(self, timeout: float = 30.0) -> "Tern":
        if not os.path.exists(self.binary):
            raise RuntimeError(f"tern binary not found at {self.binary}: build it first (cargo build --release, targets/build)")
        config_path = self.workdir / f"{self.name}.toml"
        config_path.write_text(self.config_text())
        self.starts += 1
        log = open(self.log_path, "a")
        log.write(f"\n===== start #{self.starts} =====\n")
        log.flush()
        self.proc = subprocess.Popen(
            [*self.runner, self.binary, "serve", "--config", str(config_path)],
            stdout=log,
            stderr=log,
            env={**os.environ, "TERN_LOG": os.environ.get("TERN_LOG", "info"), **self.env},
        )
        deadline = time.time() + timeout
        marker = f"kafka=127.0.0.1:{self.kafka_port}"
        while time.time() < deadline:
            text = self.log_path.read_text()
            start = text.rfind(f"===== start #{self.starts} =====")
            if "tern ready" in text[start:] and marker in text[start:]:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"tern exited with {self.proc.returncode}:\n{text[start:]}")
            time.sleep(0.02)
        raise RuntimeError(f"tern did not become ready in {timeout}s:\n{self.log_path.read_text()[-4000:]}")

    def ready_ms(self) -> int:
        text = self.log_path.read_text()
        found = re.findall(r"ready_ms=(\d+)", text)
        return int(found[-1])

    def kill(self) -> None:
        """kill -9: no chance to flush or close anything."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for a graceful exit; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def restart(self) -> "Tern":
        self.stop()
        return self.start()

    def log_text(self) -> str:
        return self.log_path.read_text()

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=10) as r:
            return r.read().decode()

    def pid(self) -> int:
        return self.proc.pid


# A lag window short enough for tests: 5 commits, sampled every 200 ms.
FAST_LAG = """
[lag]
window = 5
min_distance_ms = 100
sample_interval_ms = 200
"""


def merge_toml(base: str, extra: str) -> str:
    """Appends `extra`'s keys into `base`'s sections (both small, hand-written TOML).
    Array-of-tables headers (`[[...]]`) always start a new table."""
    sections: dict[tuple, list[str]] = {}
    order: list[tuple] = []
    tables = 0
    for text in (base, extra):
        current = ("",)
        for line in text.splitlines():
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            if stripped.startswith("[["):
                tables += 1
                current = (stripped, tables)
                sections[current] = []
                order.append(current)
                continue
            if stripped.startswith("["):
                current = (stripped,)
                continue
            if current not in sections:
                sections[current] = []
                order.append(current)
            key = stripped.split("=", 1)[0].strip()
            sections[current] = [l for l in sections[current] if l.split("=", 1)[0].strip() != key]
            sections[current].append(stripped)
    out = []
    for section in order:
        if section[0]:
            out.append(section[0])
        out.extend(sections[section])
        out.append("")
    return "\n".join(out)
