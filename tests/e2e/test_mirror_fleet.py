"""Fan-in: one hub (a real tern process) serves 100 edges at once, each a real mirror link
with its own certificate and QUIC connection, run by the fleet simulator
(tests/fleet/mirror_fleet.rs) in one process. One of them floods (100 times the others'
records, of 1 kB each: 200 MB). Everything arrives exactly once at the same offsets; the flood does not starve
the other edges; the hub's memory and CPU are printed.

MIRROR_FLEET_EDGES (100) and MIRROR_FLEET_RECORDS (2000 per edge) size the run."""

import json
import os
import statistics
import subprocess

from harness import ROOT, rss_kib
from mirror_site import Certs, mirror_status, read_all, start_hub, watermarks

FLEET_BIN = os.environ.get("MIRROR_FLEET_BIN", str(ROOT / "target" / "release" / "examples" / "mirror-fleet"))
EDGES = int(os.environ.get("MIRROR_FLEET_EDGES", "100"))
RECORDS = int(os.environ.get("MIRROR_FLEET_RECORDS", "2000"))
FLOOD = 100 * RECORDS


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_hub_serves_a_hundred_edges_fairly_and_exactly_once(tmp_path):
    assert os.path.exists(FLEET_BIN), f"{FLEET_BIN} missing: cargo build --release --example mirror-fleet"
    certs = Certs(tmp_path / "certs")
    hub = start_hub(tmp_path, certs)
    try:
        rss_before, cpu_before = rss_kib(hub.pid()), cpu_seconds(hub.pid())
        done = subprocess.run([FLEET_BIN, "--hub", f"127.0.0.1:{hub.quic_port}", "--ca-dir", str(certs.dir),
                               "--edges", str(EDGES), "--records", str(RECORDS), "--flood-records", str(FLOOD),
                               "--timeout-s", "600"], capture_output=True, text=True, timeout=700)
        assert done.returncode == 0, done.stderr[-3000:]
        warnings = [l for l in done.stderr.splitlines() if " WARN " in l or " ERROR " in l]
        lines = [json.loads(l) for l in done.stdout.splitlines() if l.startswith("{")]
        finished = {l["edge"]: l for l in lines if "edge" in l}
        summary = [l for l in lines if l.get("summary")][0]
        rss_after, cpu_after = rss_kib(hub.pid()), cpu_seconds(hub.pid())
        status = mirror_status(hub)["hub"]["edges"]
        assert len(finished) == EDGES and len(status) == EDGES, (len(finished), len(status))

        # Exactly once, at the same offsets: every edge's copy ends where its log does...
        flooder = "sim-000"
        for name in finished:
            marks = watermarks(hub.bootstrap, f"{name}.sensors")
            want = FLOOD if name == flooder else RECORDS
            assert marks == {0: (0, want)}, (name, marks)
        # ...and holds exactly its records, compared one by one for a sample and the flooder.
        for name in [flooder, "sim-001", f"sim-{EDGES // 2:03d}", f"sim-{EDGES - 1:03d}"]:
            records = read_all(hub.bootstrap, f"{name}.sensors")[0]
            assert [(r[0], r[2].rstrip()) for r in records] == \
                [(i, f"{name}:{i}".encode()) for i in range(len(records))]

        # The flood did not starve anyone: once connected, every other edge was served in
        # less time than the flooder (its 200 MB flowed meanwhile).
        others = [l["mirroring_seconds"] for n, l in finished.items() if n != flooder]
        flood_s = finished[flooder]["mirroring_seconds"]
        assert max(others) < flood_s, f"an edge took {max(others):.2f} s once connected, the flooder {flood_s:.2f} s"
        total = summary["records"]
        print(f"\nfleet: {EDGES} edges ({EDGES - 1} x {RECORDS} records + 1 x {FLOOD}) = {total} records in "
              f"{summary['seconds']:.1f} s ({total / summary['seconds']:,.0f} records/s); others served in median "
              f"{statistics.median(others):.2f} s, max {max(others):.2f} s once connected; flooder {flood_s:.2f} s; "
              f"hub RSS {rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MiB "
              f"({(rss_after - rss_before) / EDGES:.0f} KiB per edge), hub CPU {cpu_after - cpu_before:.1f} s; "
              f"{len(warnings)} warnings from the edges")
        for w in warnings[:5]:
            print("  ", w)
    finally:
        hub.kill()
