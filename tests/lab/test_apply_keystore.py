"""``skydd apply`` end to end with real ansible-runner and the real ``key_store`` role: a key
store with 0644 files fails the audit, check mode shows the change and changes nothing, the apply
fixes it, the audit passes, and a second apply changes nothing. Also: a host in a network
namespace runs its modules inside that namespace through the generated interpreter wrapper."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_root

SKYDD = str(Path(sys.executable).parent / "skydd")
CONTROL = "d.key-files-private"


def skydd(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SKYDD_HOME": str(home), "SKYDD_ACTOR": "lab-test", "NO_COLOR": "1",
           "COLUMNS": "200"}
    return subprocess.run([SKYDD, *args], capture_output=True, text=True, env=env, timeout=600)


def modes(root: Path) -> dict[str, str]:
    out = {".": oct(stat.S_IMODE(root.stat().st_mode))}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = oct(stat.S_IMODE(p.lstat().st_mode))
    return out


@pytest.fixture
def store(tmp_path: Path) -> Path:
    require_root()
    d = tmp_path / "pki"
    (d / "tls").mkdir(parents=True)
    for f in (d / "ca.key", d / "tls" / "server.key", d / "tls" / ".hidden.key"):
        f.write_text("-----BEGIN PRIVATE KEY-----\n")
        f.chmod(0o644)
    (d / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (d / "ca.pem").chmod(0o400)  # stricter than 0600: kept
    d.chmod(0o755)
    (d / "tls").chmod(0o755)
    return d


def test_audit_fails_check_shows_apply_fixes_audit_passes_reapply_changes_nothing(
        tmp_path: Path, store: Path) -> None:
    home = tmp_path / "home"
    inv = tmp_path / "inventory.yaml"
    inv.write_text(f"""
name: apply-lab-test
municipalities: [{{id: torsby, name: Torsby}}]
sites: [{{id: torsby, name: Torsby, municipality: torsby}}]
key_stores: [{{id: pki, site: torsby, path: "{store}", owner_uid: 0}}]
""")
    sel = ("--inventory", str(inv), "--control", CONTROL)

    r = skydd(home, "audit", *sel)
    assert r.returncode == 1, r.stdout + r.stderr

    before = modes(store)
    r = skydd(home, "apply", *sel, "--check", "--diff")
    assert r.returncode == 0, r.stdout + r.stderr
    shown = r.stdout + r.stderr
    assert f"{store / 'ca.key'}: mode 0644 -> 0600" in shown
    assert f"{store / 'tls'}: mode 0755 -> 0700" in shown
    assert "pki: ok=" in r.stdout and "changed=2" in r.stdout
    assert "re-audit" not in r.stdout  # check mode changes nothing, so nothing to re-audit
    assert modes(store) == before

    r = skydd(home, "apply", *sel)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "changed=2" in r.stdout and "re-audit: compliant" in r.stdout
    assert modes(store) == {".": "0o700", "ca.key": "0o600", "ca.pem": "0o400", "tls": "0o700",
                            "tls/.hidden.key": "0o600", "tls/server.key": "0o600"}

    r = skydd(home, "audit", *sel)
    assert r.returncode == 0, r.stdout + r.stderr

    r = skydd(home, "apply", *sel)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "pki: ok=" in r.stdout and "changed=0" in r.stdout and "failed=0" in r.stdout

    runs = sorted((home / "runs").iterdir())
    assert len(runs) == 3 and all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in runs)
    hosts = json.loads((runs[0] / "inventory" / "hosts.json").read_text())
    assert hosts["all"]["children"]["key_stores"]["hosts"]["pki"]["skydd_path"] == str(store)

    applies = [e for e in map(json.loads, (home / "audit.log").read_text().splitlines())
               if e["event"] == "apply"]
    assert [(e["data"]["check"], e["data"]["hosts"]["pki"]["changed"]) for e in applies] == \
        [(True, 2), (False, 2), (False, 0)]
    assert all(e["data"]["status"] == "ok" and e["data"]["runs"] == [
        {"playbook": "level_d.yml", "tags": [CONTROL]}] for e in applies)
    assert skydd(home, "log", "verify").returncode == 0


def test_a_failing_task_names_the_host_and_exits_1(tmp_path: Path) -> None:
    require_root()
    home = tmp_path / "home"
    inv = tmp_path / "inventory.yaml"
    missing = tmp_path / "no-such-store"
    inv.write_text(f"""
name: apply-lab-test
municipalities: [{{id: torsby, name: Torsby}}]
sites: [{{id: torsby, name: Torsby, municipality: torsby}}]
key_stores: [{{id: gone, site: torsby, path: "{missing}"}}]
""")
    r = skydd(home, "apply", "--inventory", str(inv), "--control", CONTROL)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "failed: gone: failed at 'd.key-files-private | preflight" in r.stdout
    assert f"key store {missing} does not exist" in r.stdout
    # the re-audit of what it touched cannot observe the store either
    assert "re-audit: incomplete" in r.stdout
    assert not missing.exists()


def test_site_limits_the_hosts_and_an_empty_site_is_bad_input(tmp_path: Path) -> None:
    require_root()
    home = tmp_path / "home"
    stores = {}
    for site in ("torsby", "sunne"):
        d = stores[site] = tmp_path / f"pki-{site}"
        d.mkdir()
        (d / "ca.key").write_text("key")
        (d / "ca.key").chmod(0o644)
    inv = tmp_path / "inventory.yaml"
    inv.write_text(f"""
name: apply-site-test
municipalities: [{{id: torsby, name: Torsby}}, {{id: sunne, name: Sunne}}, {{id: hagfors, name: Hagfors}}]
sites:
  - {{id: torsby, name: Torsby, municipality: torsby}}
  - {{id: sunne, name: Sunne, municipality: sunne}}
  - {{id: hagfors, name: Hagfors, municipality: hagfors}}
  - {{id: site4, name: Fourth site}}
firewalls: [{{id: hagfors-fw1, municipality: hagfors, site: hagfors, position: 1, connection: {{type: local}}}}]
key_stores:
  - {{id: pki-torsby, site: torsby, path: "{stores['torsby']}"}}
  - {{id: pki-sunne, site: sunne, path: "{stores['sunne']}"}}
""")
    sel = ("--inventory", str(inv), "--control", CONTROL)

    r = skydd(home, "apply", *sel, "--site", "sunne")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "pki-sunne: ok=" in r.stdout and "pki-torsby" not in r.stdout
    assert "re-audit: compliant" in r.stdout  # the re-audit keeps the site
    assert modes(stores["sunne"])["ca.key"] == "0o600"
    assert modes(stores["torsby"])["ca.key"] == "0o644"

    r = skydd(home, "apply", *sel, "--site", "hagfors")  # hosts, but no key store there
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"nothing ran for {CONTROL}" in r.stdout

    r = skydd(home, "apply", *sel, "--site", "site4")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["skydd: --site site4: the inventory has no hosts at this site"]
    assert modes(stores["torsby"])["ca.key"] == "0o644"
    assert len(list((home / "runs").iterdir())) == 2  # bad input leaves no run folder
