"""Level c end to end on the lab's vCenter (skydd-vcsim): the platform as found fails on every
host and classified VM, ``--check`` changes nothing, ``skydd apply --level c`` fixes every
automatable control but leaves the disruptive ones failing, ``--allow-disruptive`` fixes those too
(lockdown, patching to the baseline with a reboot, VM encryption with the key provider), a second
apply changes nothing, and an officer's attestation turns the server-room control from ``manual``
to ``pass``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from policies import load_catalog
from tests.lab.conftest import ensure_lab

SKYDD = str(Path(sys.executable).parent / "skydd")
CATALOG = [c for c in load_catalog().controls if c.level.value == "c"]
AUTOMATABLE = {c.id for c in CATALOG if c.remediation is not None and not c.remediation.disruptive}
DISRUPTIVE = {c.id for c in CATALOG if c.remediation is not None and c.remediation.disruptive}


def skydd(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SKYDD_HOME": str(home), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([SKYDD, *args], capture_output=True, text=True, env=env, timeout=900)


def audit(home: Path, out: Path, messages: dict[str, dict[str, str]] | None = None,
          exits: tuple[int, ...] = (1, 3)) -> dict[str, dict[str, str]]:
    """control → target → status, from a signed report of level c (and the messages, if asked)."""
    done = skydd(home, "audit", "--level", "c", "--out", str(out))
    assert done.returncode in exits, done.stderr
    report = json.loads((out / "report.json").read_text())
    assert skydd(home, "report", "verify", str(out / "report.json")).returncode == 0
    by: dict[str, dict[str, str]] = defaultdict(dict)
    for f in report["findings"]:
        by[f["control"]][f["target"]] = f["status"]
        if messages is not None:
            messages.setdefault(f["control"], {})[f["target"]] = f["message"]
    return by


def applicable(statuses: dict[str, str]) -> set[str]:
    return {s for s in statuses.values() if s != "notapplicable"}


@pytest.fixture(scope="module")
def vcsim(lab_home: Path) -> Path:
    status = ensure_lab("vcsim", lab_home)
    assert status["endpoint"].startswith("https://127.0.0.1:")
    listed = json.loads(skydd(lab_home, "lab", "status", "--format", "json").stdout)
    assert listed["services"]["vcsim"]["endpoint"] == status["endpoint"]
    return lab_home


def test_level_c_fails_as_found_then_apply_fixes_and_reapply_changes_nothing(
        vcsim: Path, tmp_path: Path) -> None:
    home = vcsim
    messages: dict[str, dict[str, str]] = {}
    before = audit(home, tmp_path / "before", messages)
    assert set(before) == {c.id for c in CATALOG}
    # Four hosts in two datacenters; three classified VMs among six.
    assert len(before["c.esxi-account-lockout"]) == 4
    assert sorted(t for t, s in before["c.vm-copy-paste-disabled"].items() if s != "notapplicable") == [
        "socialcare-app", "socialcare-db", "socialcare-db-mirror"]
    # Every control the remediation covers fails as found, on every host and classified VM.
    assert {c.id for c in CATALOG} - AUTOMATABLE - DISRUPTIVE == {"c.in-building"}
    for cid in AUTOMATABLE | DISRUPTIVE:
        assert applicable(before[cid]) == {"fail"}, (cid, before[cid])
    assert before["c.in-building"] == {"c.in-building": "manual"}
    # Hosts on a mix of builds: each finding names the build its version needs.
    needs = sorted(re.search(r"ESXi (\S+) build (\d+) is below the baseline: needs build (\d+)", m).groups()
                   for m in messages["c.esxi-patch-baseline"].values())
    assert needs == [("7.0.3", "23307199", "24784741"), ("8.0.2", "22380479", "24784735"),
                     ("8.0.3", "24022510", "24784735"), ("8.0.3", "24585383", "24784735")]

    # --check --diff on one control shows the change and makes none.
    check = skydd(home, "apply", "--control", "c.esxi-mob-disabled", "--check", "--diff")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "Config.HostAgent.plugins.solo.enableMob" in check.stdout + check.stderr
    assert applicable(audit(home, tmp_path / "checked")["c.esxi-mob-disabled"]) == {"fail"}

    # Without --allow-disruptive, lockdown, patching, encryption … are left alone.
    first = skydd(home, "apply", "--level", "c")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    after = audit(home, tmp_path / "after")
    for cid in AUTOMATABLE:
        assert applicable(after[cid]) == {"pass"}, (cid, after[cid])
    for cid in DISRUPTIVE:
        assert applicable(after[cid]) == {"fail"}, (cid, after[cid])

    disruptive = skydd(home, "apply", "--level", "c", "--allow-disruptive")
    assert disruptive.returncode == 0, disruptive.stdout[-3000:] + disruptive.stderr[-3000:]
    hardened = audit(home, tmp_path / "hardened")
    for cid in AUTOMATABLE | DISRUPTIVE:
        assert applicable(hardened[cid]) == {"pass"}, (cid, hardened[cid])

    second = skydd(home, "apply", "--level", "c", "--allow-disruptive")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    changed = re.search(r"changed (\d+) task", second.stdout + second.stderr)
    assert changed is not None and changed.group(1) == "0", second.stdout[-2000:]

    # The server room: manual until an officer attests it, then pass, and level c is compliant.
    record = tmp_path / "server-room-inspection.txt"
    record.write_text("Server room DC-1, Torsby: door locked, badge log reviewed, CCTV on.\n")
    attested = skydd(home, "attest", "c.in-building", "--evidence", str(record),
                     "--expires", "2099-12-31", "--officer", "Anna Lind")
    assert attested.returncode == 0, attested.stderr
    assert audit(home, tmp_path / "attested", exits=(0,))["c.in-building"] == {"c.in-building": "pass"}
