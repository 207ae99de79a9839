"""Level a end to end on the lab's real PostgreSQL clusters in the ``dc`` and ``site4``
namespaces: every automatable control fails as found and the drills are ``manual``;
``--check --diff`` changes nothing; ``skydd apply --level a`` builds the mirror (TLS, slot, hot
standby, heartbeat) and, with the drill and the restore test attested, the whole level passes; a
second apply changes nothing; cutting the link between ``core`` and ``site4`` while the primary
writes makes ``a.mirror-within-rpo`` fail within the RPO, and restoring it makes it pass again."""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from estate.loader import load_inventory
from policies import load_catalog
from skydd.lab import LAB_INVENTORY
from skydd.lab.postgres import grant_traverse, socket_dir
from tests.lab.conftest import ensure_lab

SKYDD = str(Path(sys.executable).parent / "skydd")
CATALOG = [c for c in load_catalog().controls if c.level.value == "a"]
AUTOMATABLE = {c.id for c in CATALOG if c.remediation is not None}
ATTESTED = {c.id for c in CATALOG if c.remediation is None}
CORE, SITE4_LINK = "skydd-tor-core", "line-site4"  # Torsby's core, its side of site4's line (skydd/lab/network.py)


def skydd(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SKYDD_HOME": str(home), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([SKYDD, *args], capture_output=True, text=True, env=env, timeout=900)


def audit(home: Path, out: Path) -> tuple[int, dict[str, dict[str, str]], dict[str, str]]:
    """Exit code, control → target → status, and control → message of a signed level-a report."""
    done = skydd(home, "audit", "--level", "a", "--out", str(out))
    assert done.returncode in (0, 1, 3), done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert skydd(home, "report", "verify", str(out / "report.json")).returncode == 0
    by: dict[str, dict[str, str]] = defaultdict(dict)
    messages = {}
    for f in report["findings"]:
        by[f["control"]][f["target"]] = f["status"]
        messages[f["control"]] = f["message"]
    return done.returncode, by, messages


def statuses(by: dict[str, dict[str, str]], cid: str) -> set[str]:
    return set(by[cid].values())


@pytest.fixture(scope="module")
def mirror_lab(lab_home: Path) -> Path:
    ensure_lab("network", lab_home)
    status = ensure_lab("postgres", lab_home)
    assert status["databases"]["socialcare-primary"]["namespace"] == "skydd-dc"
    assert status["databases"]["socialcare-mirror"]["namespace"] == "skydd-s4"
    return lab_home


def reopen(home: Path) -> None:
    """Another pytest session on the machine chmods /tmp/pytest-of-root to 0700, which masks
    the postgres user's traverse entry the lab granted there; grant it again before an apply."""
    grant_traverse(home / "lab" / "postgres", pwd.getpwnam("postgres").pw_uid)


def _primary(home: Path, which: str = "primary_db") -> psycopg.Connection:
    inv, _ = load_inventory(LAB_INVENTORY, home=home)
    db = getattr(next(s for s in inv.systems if s.id == "socialcare"), which)
    assert db is not None
    return psycopg.connect(host=str(socket_dir(home, inv, db)), port=db.port, dbname=db.name,
                           user="postgres", autocommit=True)


def test_level_a_fails_as_found_then_apply_and_attestations_pass(mirror_lab: Path, tmp_path: Path) -> None:
    home = mirror_lab
    code, before, messages = audit(home, tmp_path / "before")
    assert code == 1
    assert set(before) == {c.id for c in CATALOG} and len(CATALOG) >= 5
    for cid in AUTOMATABLE:
        assert statuses(before, cid) == {"fail"}, (cid, before[cid], messages[cid])
    for cid in ATTESTED:
        assert statuses(before, cid) == {"manual"}, (cid, before[cid])
    with _primary(home) as conn:  # the care records are there; replication is not
        assert conn.execute("SELECT count(*) FROM clients").fetchone()[0] == 3
        assert conn.execute("SELECT count(*) FROM pg_stat_replication").fetchone()[0] == 0

    # --check --diff shows the pg_hba.conf line it would add and makes nothing.
    reopen(home)
    check = skydd(home, "apply", "--level", "a", "--check", "--diff")
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
    assert re.search(r"\+hostssl\s+replication\s+replicator\s+10\.0\.40\.2/32", check.stdout + check.stderr), \
        check.stderr[-3000:]
    with _primary(home) as conn:
        assert conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = 'replicator'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pg_hba_file_rules "
                            "WHERE 'replication' = ANY(database)").fetchone()[0] == 1  # the lab's local line

    reopen(home)
    first = skydd(home, "apply", "--level", "a")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for cid in ATTESTED:
        record = tmp_path / f"{cid}.txt"
        record.write_text(f"{cid}: failover to site4 and back, 4 min, no rows lost (checksums).\n")
        expires = (datetime.now(UTC) + timedelta(days=300)).date().isoformat()
        attested = skydd(home, "attest", cid, "--evidence", str(record), "--expires", expires,
                         "--officer", "Karin Lind")
        assert attested.returncode == 0, attested.stderr
    code, after, messages = audit(home, tmp_path / "after")
    assert code == 0, messages
    for cid in AUTOMATABLE | ATTESTED:
        assert statuses(after, cid) == {"pass"}, (cid, after[cid], messages[cid])
    with _primary(home) as conn:  # through the lab network, over TLS, from the mirror's address
        row = conn.execute("SELECT host(r.client_addr), s.ssl FROM pg_stat_replication r "
                           "JOIN pg_stat_ssl s USING (pid) WHERE application_name = 'site4'").fetchone()
    assert row == ("10.0.40.2", True)
    with _primary(home, "mirror_db") as conn:  # the care records, readable at the fourth site
        assert conn.execute("SELECT pg_is_in_recovery(), count(*) FROM clients").fetchone() == (True, 3)

    reopen(home)
    second = skydd(home, "apply", "--level", "a")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    changed = re.search(r"changed (\d+) task", second.stdout + second.stderr)
    assert changed is not None and changed.group(1) == "0", second.stdout[-3000:]


def test_cutting_the_link_to_site4_fails_the_rpo_and_restoring_it_passes(mirror_lab: Path,
                                                                         tmp_path: Path) -> None:
    home = mirror_lab
    code, by, messages = audit(home, tmp_path / "healthy")
    if statuses(by, "a.mirror-within-rpo") != {"pass"}:  # run alone: build the mirror first
        reopen(home)
        applied = skydd(home, "apply", "--level", "a")
        assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]
        code, by, messages = audit(home, tmp_path / "applied")
    assert statuses(by, "a.mirror-within-rpo") == {"pass"}, messages["a.mirror-within-rpo"]
    subprocess.run(["ip", "-n", CORE, "link", "set", SITE4_LINK, "down"], check=True)
    try:
        cut = time.monotonic()
        with _primary(home) as conn:
            conn.execute("INSERT INTO visits (client_id, note) "
                         "SELECT 1, 'written during the partition ' || g FROM generate_series(1, 20000) g")
        code, by, messages = audit(home, tmp_path / "partitioned")
        assert code == 1
        assert statuses(by, "a.mirror-within-rpo") == {"fail"}, messages["a.mirror-within-rpo"]
        assert "heartbeat" in messages["a.mirror-within-rpo"]
        inv, _ = load_inventory(LAB_INVENTORY, home=home)
        rpo = next(s for s in inv.systems if s.id == "socialcare").rpo_seconds
        # Judged within the RPO window: the heartbeat wait is bounded by it.
        assert time.monotonic() - cut < rpo + 40
    finally:
        subprocess.run(["ip", "-n", CORE, "link", "set", SITE4_LINK, "up"], check=True)
    deadline = time.monotonic() + 120  # TCP retransmission back-off after the link returns
    while True:
        code, by, messages = audit(home, tmp_path / f"healed-{int(time.monotonic())}")
        if statuses(by, "a.mirror-within-rpo") == {"pass"}:
            break
        assert time.monotonic() < deadline, messages["a.mirror-within-rpo"]
        time.sleep(3)
    with _primary(home) as conn:
        lag = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) "
                           "FROM pg_stat_replication WHERE application_name = 'site4'").fetchone()
    assert lag is not None


def test_the_collector_asks_only_over_verified_tls_as_a_monitoring_role(
        mirror_lab: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The replication collector reaches both clusters over TCP with TLS verify-full as the
    inventory's pg_monitor role; a server whose certificate another CA signed (a man in the
    middle), a superuser login and a login without pg_monitor are each an ``error`` naming why,
    never evidence."""
    from audit.collectors import run_collectors
    from audit.collectors.postgres import ReplicationCollector
    from skydd.lab.postgres import _lab_ca

    inv, _ = load_inventory(LAB_INVENTORY, home=mirror_lab)
    system = next(s for s in inv.systems if s.id == "socialcare")
    assert system.primary_db is not None and system.primary_db.address

    def collect(**primary: object) -> tuple[str | None, dict[str, object]]:
        db = system.primary_db.model_copy(update=primary)  # type: ignore[union-attr]
        (ev,) = run_collectors([ReplicationCollector(system.model_copy(update={"primary_db": db}))])
        return ev.error, ev.data

    error, data = collect()
    assert error is None and data["primary"]["in_recovery"] is False  # type: ignore[index]

    _lab_ca(tmp_path / "other-ca.pem")
    error, _ = collect(ca_file=str(tmp_path / "other-ca.pem"))
    assert error is not None and "cannot be reached" in error and "SSL error" in error

    monkeypatch.setenv("SKYDD_TEST_PG_PASSWORD", "a-lab-test-password-1")
    with _primary(mirror_lab) as conn:
        for role, attrs in (("skydd_su", "SUPERUSER"), ("skydd_plain", "NOSUPERUSER")):
            conn.execute(f"DROP ROLE IF EXISTS {role}")
            conn.execute(f"CREATE ROLE {role} LOGIN {attrs} PASSWORD 'a-lab-test-password-1'")
    try:
        error, _ = collect(user="skydd_su", password="env:SKYDD_TEST_PG_PASSWORD")
        assert error is not None and "'skydd_su' is a superuser" in error
        error, _ = collect(user="skydd_plain", password="env:SKYDD_TEST_PG_PASSWORD")
        assert error is not None and "'skydd_plain' is not a member of pg_monitor" in error
    finally:
        with _primary(mirror_lab) as conn:
            conn.execute("DROP ROLE IF EXISTS skydd_su")
            conn.execute("DROP ROLE IF EXISTS skydd_plain")
