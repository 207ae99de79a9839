"""Level b over SSH in the lab (issue 11, item 7): the firewalls are reached only through their
sshd on the management address, with the pinned host keys of ``$SKYDD_HOME/lab/ssh``.

* One firewall's sshd stopped: exactly that firewall's findings, and its municipality's traffic
  proof (``network.path``/``network.traffic``, which runs over SSH on that firewall too), become
  ``error`` naming the host and the cause; every other finding keeps its status (the other
  municipalities' traffic proofs pass), and the audit exits 3. sshd started again: the findings
  are what they were.
* A wrong host key pinned for one firewall: that firewall's findings are ``error`` naming the
  host key mismatch with both fingerprints; the others are unaffected; the right key: ``pass``.
* ``skydd apply --level b --check --diff`` over SSH after apply: exit 0, no task changed, no
  firewall's rule set changed, and every firewall was reached over ssh (its sshd logged the
  sessions).

The module first brings level b to ``pass`` (applies it when an earlier test has not), so it
does not depend on the order of the lab tests. Traffic stays inside the lab's network.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.lab.conftest import ensure_lab

SKYDD = str(Path(sys.executable).parent / "skydd")
STOPPED = "sunne-fw2"  # an IPS firewall: its nftables and Suricata findings go over SSH
STOPPED_MUNICIPALITY = "sunne"  # whose traffic proof needs STOPPED
MISPINNED, OTHER = "torsby-fw1", "hagfors-fw1"  # MISPINNED gets OTHER's host key pinned
FIREWALLS = {f"{m}-fw{n}" for m in ("torsby", "sunne", "hagfors") for n in (1, 2)}
# The controls judged on evidence collected over SSH (nftables.ruleset, suricata.ips).
SSH_CONTROLS = ("b.declared-flows-only", "b.default-deny", "b.drop-logging",
                "b.management-restricted", "b.ips-drop-categories", "b.ips-fail-mode",
                "b.ips-inline-prevention", "b.ips-rules-fresh")

Key = tuple[str, str]  # (control, target)


def skydd(home: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SKYDD_HOME": str(home), "SKYDD_ACTOR": "lab-test"}
    return subprocess.run([SKYDD, *args], capture_output=True, text=True, env=env, timeout=timeout)


def audit(home: Path, out: Path, *args: str) -> tuple[int, dict[Key, dict[str, Any]], str]:
    """Run ``skydd audit`` (level b unless ``args`` select otherwise); exit code, the level-b
    findings by (control, target), and the output for assertion messages."""
    r = skydd(home, "audit", *(args or ("--level", "b")), "--out", str(out))
    text = r.stdout + r.stderr
    assert (out / "report.json").exists(), text
    report = json.loads((out / "report.json").read_text())
    findings = {(f["control"], f["target"]): f for f in report["findings"] if f["level"] == "b"}
    assert findings, text
    return r.returncode, findings, text


def statuses(findings: dict[Key, dict[str, Any]]) -> dict[Key, str]:
    return {k: f["status"] for k, f in findings.items()}


def lab_hosts(home: Path) -> dict[str, Any]:
    """The lab's managed hosts by name (firewall id or segment), as ``skydd.lab.ssh`` sees them."""
    from estate.loader import load_inventory
    from skydd.lab import LAB_INVENTORY
    from skydd.lab.management import managed_hosts

    inv, _ = load_inventory(LAB_INVENTORY, home=home)
    return {h.name: h for h in managed_hosts(inv)}


def host_fingerprint(line: str) -> str:
    """``ssh-ed25519 SHA256:…`` of a known_hosts line (as the transport names keys)."""
    import asyncssh

    key = asyncssh.import_public_key(" ".join(line.split()[1:3]))
    return f"{key.get_algorithm()} {key.get_fingerprint('sha256')}"


@pytest.fixture(scope="module")
def baseline(lab_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[Key, str]:
    """Level b as applied: every finding ``pass`` (apply first when it is not)."""
    ensure_lab("network", lab_home)
    out = tmp_path_factory.mktemp("baseline")
    code, found, text = audit(lab_home, out / "first")
    if code != 0:
        applied = skydd(lab_home, "apply", "--level", "b")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        code, found, text = audit(lab_home, out / "applied")
    not_passing = {k: (f["status"], f["message"]) for k, f in found.items() if f["status"] != "pass"}
    assert code == 0 and not not_passing, (not_passing, text)
    assert {t for (_, t) in found} >= FIREWALLS
    return statuses(found)


def test_a_stopped_sshd_turns_exactly_that_firewalls_findings_into_error(
        lab_home: Path, baseline: dict[Key, str], tmp_path: Path) -> None:
    from skydd.lab import ssh

    hosts = lab_hosts(lab_home)
    target = hosts[STOPPED]
    label = f"{STOPPED} ({target.address}:22)"
    assert ssh.stop_host(lab_home, target)
    try:
        up = {name: h["up"] for name, h in ssh.status(lab_home, list(hosts.values()))["hosts"].items()}
        assert up == {name: name != STOPPED for name in hosts}, up  # only that sshd stopped
        code, found, text = audit(lab_home, tmp_path / "stopped")
    finally:
        ssh.restart_host(lab_home, target)

    assert code == 3, text
    mine = {k: f for k, f in found.items() if k[1] == STOPPED}
    assert len(mine) == 8, sorted(mine)  # 4 nftables controls + 4 IPS controls
    for (control, _), f in mine.items():
        assert f["status"] == "error", (control, f["status"], f["message"])
        assert label in f["message"], f["message"]
        assert re.search(r": (unreachable|timeout): ", f["message"]), f["message"]
    traffic = {k: f for k, f in found.items() if k[1] == STOPPED_MUNICIPALITY}
    assert len(traffic) >= 5, sorted(traffic)  # the path, the flows, independence, the IPS twice
    for (control, _), f in traffic.items():
        assert f["status"] == "error" and label in f["message"], (control, f["message"])
    others = {k: s for k, s in statuses(found).items() if k[1] not in (STOPPED, STOPPED_MUNICIPALITY)}
    assert others == {k: s for k, s in baseline.items() if k[1] not in (STOPPED, STOPPED_MUNICIPALITY)}
    assert found[("b.declared-flow-traffic", "torsby")]["status"] == "pass"  # another municipality

    code, found, text = audit(lab_home, tmp_path / "restarted")
    assert code == 0, text
    assert statuses(found) == baseline


def test_b_a_wrong_pinned_host_key_is_that_firewalls_error_naming_the_mismatch(
        lab_home: Path, baseline: dict[Key, str], tmp_path: Path) -> None:
    from ruamel.yaml import YAML

    from skydd.lab import LAB_INVENTORY, ssh

    hosts = lab_hosts(lab_home)
    address, other = hosts[MISPINNED].address, hosts[OTHER].address
    lines = {ln.split()[0]: ln for ln in ssh.known_hosts(lab_home).read_text().splitlines() if ln}
    real, wrong = lines[address], lines[other]
    known = tmp_path / "known_hosts"
    known.write_text("".join((f"{address} {' '.join(wrong.split()[1:3])}" if a == address else ln)
                             + "\n" for a, ln in lines.items()))

    yaml = YAML()
    doc = yaml.load(LAB_INVENTORY.read_text())
    (fw,) = [f for f in doc["firewalls"] if f["id"] == MISPINNED]
    fw["connection"]["known_hosts"] = str(known)
    inventory = tmp_path / "inventory.yaml"
    with inventory.open("w") as f:
        yaml.dump(doc, f)

    only = ("--control", ",".join(SSH_CONTROLS))
    code, found, text = audit(lab_home, tmp_path / "wrong", "--inventory", str(inventory), *only)
    assert code == 3, text
    mine = {k: f for k, f in found.items() if k[1] == MISPINNED}
    assert len(mine) == 4, sorted(mine)  # a fw1: the 4 nftables controls
    for (control, _), f in mine.items():
        assert f["status"] == "error", (control, f["status"], f["message"])
        assert f"{MISPINNED} ({address}:22): host key mismatch" in f["message"], f["message"]
        assert f"pins {host_fingerprint(wrong)} but the host presented {host_fingerprint(real)}" \
            in f["message"], f["message"]
    others = {k: s for k, s in statuses(found).items() if k[1] != MISPINNED}
    assert others == {k: s for k, s in baseline.items() if k[0] in SSH_CONTROLS
                      and k[1] != MISPINNED}

    code, found, text = audit(lab_home, tmp_path / "right", *only)  # the lab's own known_hosts
    assert code == 0, text
    assert statuses(found) == {k: s for k, s in baseline.items() if k[0] in SSH_CONTROLS}


def hostvars(data: Any, name: str) -> dict[str, Any]:
    """The variables of host ``name`` anywhere in an Ansible JSON inventory."""
    found: dict[str, Any] = {}

    def walk(group: dict[str, Any]) -> None:
        found.update((group.get("hosts") or {}).get(name) or {})
        for child in (group.get("children") or {}).values():
            walk(child)

    for group in data.values():
        walk(group)
    return found


def test_c_apply_check_diff_over_ssh_changes_nothing(
        lab_home: Path, baseline: dict[Key, str]) -> None:
    from skydd.lab import ssh

    hosts = lab_hosts(lab_home)

    def rulesets() -> dict[str, str]:
        """Each firewall's rule set without counters (``-s``: traffic moves them)."""
        return {fw: subprocess.run(["ip", "netns", "exec", hosts[fw].namespace, "nft", "-s",
                                    "list", "ruleset"], capture_output=True, text=True,
                                   check=True).stdout
                for fw in FIREWALLS}

    def sessions(fw: str) -> int:
        """Sessions the firewall's sshd started (logged also over a reused master connection)."""
        log = ssh.host_dir(lab_home, hosts[fw]) / "sshd.log"
        return log.read_text().count("Starting session:")

    before, started = rulesets(), {fw: sessions(fw) for fw in FIREWALLS}
    check = skydd(lab_home, "apply", "--level", "b", "--check", "--diff")
    text = check.stdout + check.stderr
    assert check.returncode == 0, text
    counts = dict(re.findall(r"^(\S+-fw\d): ok=\d+ changed=(\d+)", check.stdout, re.M))
    assert set(counts) == FIREWALLS, text
    assert set(counts.values()) == {"0"}, text
    assert re.search(r"would change 0 task\(s\)", check.stdout), text
    assert rulesets() == before, "check mode changed a firewall"
    assert all(sessions(fw) > started[fw] for fw in FIREWALLS), "a firewall was not reached over ssh"

    run_dir = Path(re.search(r"run folder (\S+)", check.stdout).group(1))
    data = json.loads((run_dir / "inventory" / "hosts.json").read_text())
    for fw in FIREWALLS:
        hv = hostvars(data, fw)
        assert hv["ansible_connection"] == "ssh" and hv["ansible_host"] == hosts[fw].address, hv
        assert "StrictHostKeyChecking=yes" in hv["ansible_ssh_common_args"], hv
