"""A real mosquitto (Debian package) for the bridge tests: started on an ephemeral
loopback port with persistence on (autosave every second, so a restart loses nothing),
no limit on queued messages, optionally TLS + username/password. Fails loudly when
mosquitto is missing."""

import getpass
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time

from harness import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Mosquitto:
    def __init__(self, workdir, name="mosquitto", max_inflight=1000, tls=None, password_file=None, extra=""):
        if not os.path.exists(MOSQUITTO):
            raise RuntimeError("mosquitto not found: tests/run installs it (apt-get install mosquitto)")
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.name = name
        self.max_inflight = max_inflight
        self.tls = tls  # (ca, cert, key) paths
        self.password_file = password_file
        self.extra = extra  # more mosquitto.conf lines
        self.log_path = self.workdir / f"{name}.log"
        self.proc = None

    def config_text(self):
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence true",
            f"persistence_location {self.workdir}/",
            f"persistence_file {self.name}.db",
            "autosave_interval 1",
            "max_queued_messages 0",
            "max_queued_bytes 0",
            f"max_inflight_messages {self.max_inflight}",
            # Run as whoever runs the tests (as root mosquitto would switch to `mosquitto`,
            # which cannot write the persistence file into the test's directory).
            f"user {getpass.getuser()}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if self.password_file:
            lines += ["allow_anonymous false", f"password_file {self.password_file}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls:
            ca, cert, key = self.tls
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
        return "\n".join(lines) + "\n" + self.extra

    def start(self, timeout=15):
        config = self.workdir / f"{self.name}.conf"
        config.write_text(self.config_text())
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=log, stderr=log)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}:\n{self.log_path.read_text()}")

    def stop(self):
        """Graceful stop: mosquitto writes its persistence file."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def bridge_config(mosquitto, name="gw", inbound=(), outbound=(), extra=""):
    """A [[bridges.mqtt]] table for `tern_factory(config=...)`."""
    text = f'[[bridges.mqtt]]\nname = "{name}"\nport = {mosquitto.port}\n{extra}\n'
    for rule in inbound:
        text += "[[bridges.mqtt.inbound]]\n" + "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in rule.items())
    for rule in outbound:
        text += "[[bridges.mqtt.outbound]]\n" + "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in rule.items())
    return text


def wait_subscribed(tern, timeout=20):
    """Until the bridge's SUBSCRIBE was acknowledged (messages published before it are not
    queued for a bridge that never had a session)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = tern.log_text()
        if "MQTT inbound subscribed" in text[text.rfind("===== start #"):]:
            return
        time.sleep(0.05)
    raise AssertionError("the bridge did not subscribe:\n" + tern.log_text()[-3000:])
