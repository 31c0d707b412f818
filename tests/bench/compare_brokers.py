#!/usr/bin/env python3
"""tern next to another Kafka-protocol broker, measured by the same client (`tern bench`):
batched produce, consume, and 1,000 unbatched producers, with each broker's CPU per
request read from /proc. Prints one table and tern's ratios.

The peer is tansu (https://tansu.io), a Rust Kafka-protocol broker from the crate registry:

    cargo install tansu --locked --features dynostore,libsql --root target/tansu   # ~40 min here
    python3 tests/bench/compare_brokers.py --tansu target/tansu/bin/tansu

tansu's memory engine keeps nothing on disk and its SQLite engine syncs as SQLite does;
tern fsyncs every acknowledged produce (acks=all). Read the table with that in mind.
"""

import argparse
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode} before listening")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    sys.exit(f"{what} did not listen on {port} within {timeout} s")


def start_tern(binary, workdir):
    port, http = free_port(), free_port()
    config = workdir / "tern.toml"
    config.write_text(f'[broker]\ndata_dir = "{workdir / "data"}"\n'
                      f'[kafka]\nlisten = "127.0.0.1:{port}"\nmax_connections = 4096\n'
                      f'[http]\nlisten = "127.0.0.1:{http}"\n')
    proc = subprocess.Popen([binary, "serve", "-c", str(config)], stdout=subprocess.DEVNULL,
                            stderr=open(workdir / "tern.log", "w"))
    wait_for_port(port, proc, "tern")
    return proc, port, f"127.0.0.1:{http}"


def start_tansu(binary, workdir, engine):
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen([binary, "broker", "--listener-url", url, "--advertised-listener-url",
                             url, "--storage-engine", engine], cwd=workdir,
                            stdout=subprocess.DEVNULL, stderr=open(workdir / "tansu.log", "w"))
    wait_for_port(port, proc, f"tansu ({engine})")
    return proc, port, None


def bench(tern_bin, port, pid, http, *args):
    command = [tern_bin, "bench", "--bootstrap-server", f"127.0.0.1:{port}", *args,
               "--broker-pid", str(pid), "--report-interval-ms", "0", "--json"]
    if http:
        command += ["--http", http]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed: {result.stderr}")
    return json.loads(result.stdout)


SCENARIOS = [
    ("batched produce (1 conn, 1000 records/request)",
     ["produce", "-t", "batched", "--records", "1000000", "--batch", "1000"]),
    ("consume the 1M records", ["consume", "-t", "batched"]),
    ("unbatched produce (1000 conns, 1 record/request)",
     ["produce", "-t", "unbatched", "--records", "200000", "--batch", "1", "--connections", "1000"]),
]


def run_broker(name, start, tern_bin):
    workdir = pathlib.Path(tempfile.mkdtemp(prefix=f"compare-{name.split()[0]}-"))
    proc, port, http = start(workdir)
    rows = []
    try:
        for title, args in SCENARIOS:
            figures = bench(tern_bin, port, proc.pid, http, *args)
            rows.append((title, figures))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tern", default=str(ROOT / "target/release/tern"))
    parser.add_argument("--tansu", default=os.environ.get("TANSU_BIN", "target/tansu/bin/tansu"))
    options = parser.parse_args()
    for path, what in ((options.tern, "tern (cargo build --release)"),
                       (options.tansu, "tansu (see the top of this file)")):
        if not os.access(path, os.X_OK):
            sys.exit(f"{what} not found at {path}")
    brokers = [
        ("tern", lambda w: start_tern(options.tern, w)),
        ("tansu memory", lambda w: start_tansu(options.tansu, w, "memory://tansu/")),
        ("tansu sqlite", lambda w: start_tansu(options.tansu, w, "sqlite://tansu.db")),
    ]
    results = {name: run_broker(name, start, options.tern) for name, start in brokers}

    print(f"{'scenario':<50} {'broker':<14} {'records/s':>12} {'p99 ms':>8} "
          f"{'CPU µs/req':>11} {'CPU s/M rec':>11}")
    for i, (title, _) in enumerate(SCENARIOS):
        for name in results:
            f = results[name][i][1]
            p99 = f["latency_ms"]["p99"] if f["latency_ms"] else float("nan")
            print(f"{title:<50} {name:<14} {f['records_per_second']:>12.0f} {p99:>8.2f} "
                  f"{f['broker_cpu_us_per_request']:>11.1f} "
                  f"{f['broker_cpu_seconds_per_million_records']:>11.3f}")
    print("\nratios, tern / peer (records/s higher is better; CPU per record lower is better):")
    for i, (title, _) in enumerate(SCENARIOS):
        ours = results["tern"][i][1]
        for name in list(results)[1:]:
            theirs = results[name][i][1]
            print(f"  {title:<50} vs {name:<13} records/s x{ours['records_per_second'] / theirs['records_per_second']:.2f}, "
                  f"CPU per record x{ours['broker_cpu_seconds_per_million_records'] / max(theirs['broker_cpu_seconds_per_million_records'], 1e-9):.2f}")


if __name__ == "__main__":
    main()
