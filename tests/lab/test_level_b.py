"""Level b on the real lab network: every level-b control fails as found and passes after
`skydd apply --level b` for all three municipalities; a second apply changes nothing. Traffic is
sent only inside the lab's namespaces. The namespaces are built once (``ensure_lab``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.lab.conftest import ensure_lab, ns_suricata_pids

SKYDD = str(Path(sys.executable).parent / "skydd")
MUNICIPALITIES = {"torsby", "sunne", "hagfors"}
CONTROLS = 13
# Targets per kind: 6 firewalls, 3 IPS firewalls, 3 municipalities (path and traffic).
TARGETS = {"nftables.ruleset": 6, "suricata.ips": 3, "network.path": 3, "network.traffic": 3}


def skydd(home: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SKYDD_HOME": str(home), "SKYDD_ACTOR": "lab-test"}
    return subprocess.run([SKYDD, *args], capture_output=True, text=True, env=env, timeout=timeout)


def level_b_findings(home: Path, out: Path) -> list[dict]:
    r = skydd(home, "audit", "--level", "b", "--out", str(out))
    report = json.loads((out / "report.json").read_text())
    findings = [f for f in report["findings"] if f["level"] == "b"]
    assert findings, r.stdout + r.stderr
    return findings


def test_lab_up_cleans_up_what_a_crashed_run_left(lab_home: Path) -> None:
    from skydd.lab import network

    ensure_lab("network", lab_home)
    subprocess.run(["ip", "netns", "add", "skydd-stray"], check=True)
    svc = network.Service(lab_home)
    svc.up(lambda msg: None)  # as after a crash: leftovers first, then a clean build
    assert "skydd-stray" not in network.lab_namespaces()
    assert svc.status()["state"] == "up"
    assert set(svc.status()["namespaces"]) == set(svc.status()["expected"])
    status = json.loads(skydd(lab_home, "lab", "status", "--format", "json").stdout)
    assert status["services"]["network"]["state"] == "up"
    assert "skydd-tor-fw2" in status["services"]["network"]["namespaces"]


def test_every_level_b_control_fails_as_found_and_passes_after_apply(
        lab_home: Path, tmp_path: Path) -> None:
    ensure_lab("network", lab_home)

    before = level_b_findings(lab_home, tmp_path / "before")
    assert len({f["control"] for f in before}) == CONTROLS
    not_failing = [(f["control"], f["target"], f["status"], f["message"]) for f in before
                   if f["status"] != "fail"]
    assert not not_failing, not_failing
    assert {f["municipality"] for f in before} == MUNICIPALITIES

    check = skydd(lab_home, "apply", "--level", "b", "--check", "--diff")
    assert check.returncode == 0, check.stdout + check.stderr
    out = subprocess.run(["ip", "netns", "exec", "skydd-sun-fw1", "nft", "list", "ruleset"],
                         capture_output=True, text=True, check=True).stdout
    assert "skydd_fw1" not in out, "check mode changed the firewall"

    first = skydd(lab_home, "apply", "--level", "b")
    assert first.returncode == 0, first.stdout + first.stderr

    after = level_b_findings(lab_home, tmp_path / "after")
    not_passing = [(f["control"], f["target"], f["status"], f["message"]) for f in after
                   if f["status"] != "pass"]
    assert not not_passing, not_passing
    per_control = {c: sum(1 for f in after if f["control"] == c) for c in {f["control"] for f in after}}
    assert len(per_control) == CONTROLS and sum(per_control.values()) == (
        4 * TARGETS["nftables.ruleset"] + 4 * TARGETS["suricata.ips"]
        + TARGETS["network.path"] + 4 * TARGETS["network.traffic"])
    assert {f["municipality"] for f in after} == MUNICIPALITIES

    # Each firewall's own rule file passes nft's check inside its namespace.
    for muni, short in (("torsby", "tor"), ("sunne", "sun"), ("hagfors", "hag")):
        for n in (1, 2):
            conf = lab_home / "lab" / "network" / f"{muni}-fw{n}" / "nftables.conf"
            r = subprocess.run(["ip", "netns", "exec", f"skydd-{short}-fw{n}", "nft", "-c", "-f",
                                str(conf)], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr

    # The traffic probes restored what they opened and restarted what they stopped.
    rules = subprocess.run(["ip", "netns", "exec", "skydd-hag-fw1", "nft", "list", "ruleset"],
                           capture_output=True, text=True, check=True).stdout
    assert "skydd-probe-open" not in rules
    for short in ("tor", "sun", "hag"):
        assert ns_suricata_pids(f"skydd-{short}-fw2"), f"Suricata was not restarted in skydd-{short}-fw2"
    second = skydd(lab_home, "apply", "--level", "b")
    assert second.returncode == 0, second.stdout + second.stderr
    counts = dict(re.findall(r"^(\S+-fw\d): ok=\d+ changed=(\d+)", second.stdout, re.M))
    assert set(counts) == {f"{m}-fw{n}" for m in MUNICIPALITIES for n in (1, 2)}, second.stdout
    assert set(counts.values()) == {"0"}, second.stdout
