"""Produce throughput over SASL_SSL (SCRAM-SHA-512) against PLAINTEXT, in one run, with
AES-GCM and with ChaCha20-Poly1305 (what a Raspberry Pi 4 without AES instructions should
use): kcat (librdkafka, acks=all, lz4) sends the same RECORDS lines of ~100 bytes to each
listener of one tern; wall time until kcat exits (everything acknowledged).

ChaCha20 is forced on the client through OpenSSL's configuration (OPENSSL_CONF, TLS 1.3
Ciphersuites); tern logs the suite each TLS connection negotiated, and the script prints
it, so the figure is known to be for that cipher.

    apt-get install kcat
    cargo build --release
    python3 tests/bench/listener_tls_bench.py [--records 2000000]

Prints figures; asserts nothing. Record them in docs/BENCHMARKS.md.
"""

import argparse
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))

from harness import TERN_BIN, Tern, free_port  # noqa: E402

PASSWORD = "bench-pa55"


def produce(lines: pathlib.Path, topic: str, options: list, env: dict = None) -> float:
    started = time.time()
    done = subprocess.run(["kcat", "-P", "-t", topic, "-z", "lz4", "-X", "acks=all", "-X", "linger.ms=5",
                           "-X", "batch.size=1000000", "-X", "queue.buffering.max.messages=1000000",
                           *options, "-l", str(lines)], capture_output=True, text=True, timeout=1800,
                          env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise RuntimeError(f"kcat failed: {done.stderr[-2000:]}")
    return time.time() - started


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=2_000_000)
    args = parser.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="tls-bench-"))
    lines = work / "records.txt"
    with open(lines, "w") as f:
        for i in range(args.records):
            f.write(f'{{"device":"sensor-{i % 997}","seq":{i},"temp":{20 + i % 13},"pad":"{"x" * 40}"}}\n')
    size = lines.stat().st_size
    certs = work / "certs"
    for cmd in (["ca"], ["hub", "--name", "127.0.0.1"]):
        subprocess.run([TERN_BIN, "certs", *cmd, "--dir", str(certs)], check=True, capture_output=True)
    port = free_port()
    tern = Tern(work / "tern", config=f"""
[[kafka.listeners]]
name = "SECURE"
listen = "127.0.0.1:{port}"
security_protocol = "SASL_SSL"
cert = "{certs / 'hub.pem'}"
key = "{certs / 'hub.key'}"
""")
    subprocess.run([TERN_BIN, "users", "add", "bench", "--data-dir", str(tern.data_dir)], input=PASSWORD + "\n",
                   text=True, check=True, capture_output=True)
    os.environ["TERN_LOG"] = "info,tern::kafka::connection=debug"
    tern.start()
    chacha = work / "openssl-chacha.cnf"
    chacha.write_text("openssl_conf = conf\n[conf]\nssl_conf = ssl\n[ssl]\nsystem_default = sys\n"
                      "[sys]\nCiphersuites = TLS_CHACHA20_POLY1305_SHA256\n")
    secure = ["-b", f"127.0.0.1:{port}", "-X", "security.protocol=SASL_SSL", "-X", "sasl.mechanism=SCRAM-SHA-512",
              "-X", "sasl.username=bench", "-X", f"sasl.password={PASSWORD}", "-X", f"ssl.ca.location={certs / 'ca.pem'}"]
    try:
        results = []
        for label, topic, options, env in [
            ("PLAINTEXT", "plain", ["-b", tern.bootstrap], None),
            ("SASL_SSL, AES-GCM (default)", "aes", secure, None),
            ("SASL_SSL, ChaCha20-Poly1305", "chacha", secure, {"OPENSSL_CONF": str(chacha)}),
        ]:
            before = len(re.findall(r"TLS established", tern.log_text()))
            seconds = produce(lines, topic, options, env)
            suites = re.findall(r"TLS established suite=Some\((\w+)\)", tern.log_text())[before:]
            results.append((label, seconds, sorted(set(suites))))
        base = results[0][1]
        print(f"records: {args.records:,} lines, {size / 1e6:.0f} MB, kcat acks=all lz4, one tern on loopback")
        for label, seconds, suites in results:
            print(f"{label:32s} {seconds:6.2f} s  {args.records / seconds:12,.0f} records/s  "
                  f"{size / seconds / 1e6:6.1f} MB/s  ratio to PLAINTEXT {base / seconds:.2f}  "
                  f"{'negotiated: ' + ', '.join(suites) if suites else ''}")
    finally:
        tern.kill()


if __name__ == "__main__":
    main()
