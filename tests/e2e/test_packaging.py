"""The Debian packages (built by targets/package, as tests/run does): right architecture,
the binary, the config in /etc/tern and the unit; the unit passes systemd-analyze verify
inside the unpacked root; the packaged config is valid."""

import subprocess

import pytest

from harness import ROOT, TERN_BIN

PACKAGES = {
    "aarch64-unknown-linux-gnu": "arm64",
    "armv7-unknown-linux-gnueabihf": "armhf",
}


def deb_for(target):
    debs = sorted((ROOT / "target" / target / "debian").glob("tern_*.deb"))
    assert debs, f"no .deb for {target}: run `targets/package {target}` first"
    return debs[-1]


@pytest.mark.parametrize("target", sorted(PACKAGES))
def test_deb_installs_into_an_arm_root(target, tmp_path):
    deb = deb_for(target)
    arch = subprocess.run(["dpkg-deb", "-f", str(deb), "Architecture"], capture_output=True, text=True, check=True)
    assert arch.stdout.strip() == PACKAGES[target]
    contents = subprocess.run(["dpkg", "--contents", str(deb)], capture_output=True, text=True, check=True).stdout
    for path in ("./usr/bin/tern", "./etc/tern/tern.toml", "./lib/systemd/system/tern.service"):
        assert path in contents, f"{path} missing from {deb.name}"
    conffiles = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(deb)], capture_output=True, check=True).stdout
    assert b"/etc/tern/tern.toml" in conffiles, "the config must be a conffile (kept on upgrade)"

    root = tmp_path / "root"
    subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    binary = root / "usr/bin/tern"
    described = subprocess.run(["file", str(binary)], capture_output=True, text=True).stdout
    assert "ARM" in described and "stripped" in described, described

    # The packaged config is valid for this tern.
    check = subprocess.run([TERN_BIN, "config", "check", str(root / "etc/tern/tern.toml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr

    # systemd-analyze verify needs the standard units next to ours inside the root: take
    # the host's (Debian's systemd package), without replacing anything the package put there.
    units = root / "lib/systemd/system"
    subprocess.run(["cp", "-an", "/lib/systemd/system/.", str(units)], check=True)
    verify = subprocess.run(["systemd-analyze", "verify", f"--root={root}", str(units / "tern.service")],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
