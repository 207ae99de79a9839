"""Level e against the real lab Keycloak and training store, through the real ``skydd`` CLI:
every level-e control fails as found; the check run lists whose role would go and changes
nothing; apply takes the role from the untrained and the audit passes; the access decision's
training source denies them; an LMS import of their completions and another apply give it back;
a further apply changes nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from tests.lab.conftest import ensure_lab

SKYDD = str(Path(sys.executable).parent / "skydd")
LEVEL_E = {"e.training-current", "e.training-before-first-access", "e.training-store-current",
           "e.role-holders-have-records", "e.training-enforced"}


def skydd(home: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SKYDD_HOME": str(home), "SKYDD_ACTOR": "lab-test"}
    return subprocess.run([SKYDD, *args], capture_output=True, text=True, env=env, timeout=timeout)


def directory(home: Path) -> dict[str, object]:
    from estate.loader import load_inventory
    from estate.secrets import resolve_secret
    from identity.training_enforce import connect, read_directory
    from skydd.lab import LAB_INVENTORY

    inv, _ = load_inventory(LAB_INVENTORY, home=home)
    idp = inv.identity_provider
    admin = connect(idp.url, idp.realm, resolve_secret(idp.admin_username),
                    resolve_secret(idp.admin_password), idp.ca_file)
    return {u.username: u for u in read_directory(admin, [m.id for m in inv.municipalities])}


def store_url(home: Path) -> str:
    from estate.loader import load_inventory
    from skydd.lab import LAB_INVENTORY

    return load_inventory(LAB_INVENTORY, home=home)[0].training_store.url


def level_e_findings(home: Path) -> dict[str, str]:
    report = json.loads((home / "reports" / "latest" / "report.json").read_text())
    return {f["control"]: f["status"] for f in report["findings"] if f["level"] == "e"}


def test_training_gates_the_socialcare_role(lab_home: Path) -> None:
    ensure_lab("keycloak", lab_home)
    ensure_lab("training", lab_home)
    from identity.training import StoreTrainingSource
    from identity.training_store import TrainingStore

    now = datetime.now(UTC)
    store = TrainingStore(store_url(lab_home), create=False)
    standings = store.standings(now)
    store.close()
    untrained = sorted(s.username for s in standings if not s.current)  # as seeded
    current = {s.username for s in standings if s.current}
    before = directory(lab_home)
    assert untrained, "the lab store must hold users without current training"
    assert all(before[u].has_role for u in untrained)
    # Everyone holding the role without current training loses it (also anyone an earlier test
    # created with the role and no record at all).
    losing = sorted(u for u, d in before.items() if d.has_role and u not in current)

    # As found: every level-e control fails.
    r = skydd(lab_home, "audit", "--level", "e")
    assert r.returncode == 1, r.stdout + r.stderr
    assert level_e_findings(lab_home) == dict.fromkeys(LEVEL_E, "fail")

    # The check run lists whose role would go, and changes nothing.
    r = skydd(lab_home, "apply", "--level", "e", "--check", "--diff")
    assert r.returncode == 0, r.stdout + r.stderr
    for u in losing:
        assert re.search(rf"^\s*-{re.escape(u)}$", r.stderr, re.M), f"{u} not listed:\n{r.stderr}"
    assert "nothing ran for" not in r.stdout, r.stdout
    assert all(directory(lab_home)[u].has_role for u in untrained)

    # Enforcement: the untrained lose the role, nobody else does, and the audit passes.
    r = skydd(lab_home, "apply", "--level", "e")
    assert r.returncode == 0, r.stdout + r.stderr
    after = directory(lab_home)
    assert sorted(u for u, d in after.items() if before[u].has_role and not d.has_role) == losing
    assert "re-audit: compliant (5 pass)" in r.stdout, r.stdout  # apply audits what it touched
    assert level_e_findings(lab_home) == dict.fromkeys(LEVEL_E, "pass")

    # The access decision's training source denies them, and allows the trained.
    source = StoreTrainingSource(store_url(lab_home), ttl=0)
    denied = source.training_status(untrained[0], None, now)
    assert not denied.current and denied.reason
    trained = next(u for u, d in after.items() if d.has_role and d.groups)
    assert source.training_status(trained, None, now).current

    # They complete their training (an LMS export), and enforcement gives the role back.
    export = lab_home / "lms-completions.csv"
    day = now.strftime("%Y-%m-%d")
    courses = ("infosec-basics", "patient-data", "eid-card-use")
    export.write_text("username,course,completed_at\n" + "".join(
        f"{u},{c},{day}\n" for u in untrained for c in courses))
    r = skydd(lab_home, "training", "import", str(export))
    assert r.returncode == 0, r.stdout + r.stderr
    r = skydd(lab_home, "apply", "--level", "e")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "compliant (5 pass)" in r.stdout, r.stdout
    restored = directory(lab_home)
    assert all(restored[u].has_role for u in untrained)

    # Idempotent: a further apply changes nothing.
    r = skydd(lab_home, "apply", "--level", "e")
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"changed=0 failed=0", r.stdout), r.stdout
