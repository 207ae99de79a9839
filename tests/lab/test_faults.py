"""Faults of issue 14 against the real lab: a source dies in the middle of an audit, an IPS
dies on one firewall.

* Keycloak SIGKILLed 1 s into ``skydd audit --level d``: its findings are ``error``, never
  ``pass``; the shared session Keycloak (``ensure_lab``) is restarted, no extra one is started.
* Suricata SIGKILLed on one IPS firewall (declared fail-closed): real traffic through it stops,
  the other municipalities' does not, and the level b audit says so for exactly that firewall
  and its municipality; Suricata is restarted afterwards (a fixture, whatever the test did).
* The PostgreSQL primary SIGKILLed (every process of its cluster) and the mirror promoted by
  hand: the audit says ``error`` while the primary is gone and ``fail`` once the old primary is
  back beside the promoted mirror; the promoted mirror keeps what was replicated; ``skydd apply``
  refuses to rebuild it over the writes made after the failover. The lab is rebuilt afterwards.
  (``a.failover-drill`` stays an officer's attestation: Skydd does not run the drill itself.)

Run under ``flock /tmp/skydd-lab.lock``; with other pytest sessions on the machine, a lab home
outside ``/tmp/pytest-of-root`` (``SKYDD_LAB_HOME``) keeps their cleanup away from the lab.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from policies import load_catalog
from tests.lab.conftest import ensure_lab, ns_bound_queues, ns_suricata_pids
from tests.lab.test_level_b_ssh import Key, statuses
from tests.lab.test_level_b_ssh import audit as audit_b
from tests.lab.test_level_b_ssh import skydd as skydd_b
from tests.lab.test_level_d import LEVEL_D_KEYCLOAK, findings, skydd

SKYDD = str(Path(sys.executable).parent / "skydd")
RESTART_SETTLE = 180.0  # seconds the restarted Keycloak may take to be steadily up
KILL_AFTER = 1.0  # seconds after the audit started: it is loading the inventory or collecting


def test_keycloak_killed_in_the_middle_of_an_audit(lab_home: Path, tmp_path: Path) -> None:
    """What must hold when Keycloak is SIGKILLed while ``skydd audit --level d`` runs: every
    Keycloak-sourced finding is ``error`` (never ``pass``, and never a ``fail`` that would blame
    the configuration), the audit exits 3 (evidence could not be observed) unless a finding
    that does not rest on Keycloak fails (then 1: a fail outranks missing evidence, see
    ``policies.exit_code``; the unhardened lab's ``d.key-files-private`` does), and the level's
    finding that does not rest on Keycloak (``d.key-files-private``) is what it was with
    Keycloak up. Keycloak is restarted afterwards so later lab tests still have it."""
    from skydd.lab import services

    ensure_lab("keycloak", lab_home)
    base = skydd(lab_home, "audit", "--level", "d", "--out", str(tmp_path / "base"))
    assert base.returncode in (0, 1), base.stderr
    baseline = findings(tmp_path / "base")

    (keycloak,) = services(lab_home, ["keycloak"])
    pid = keycloak._running_pid()
    assert pid is not None
    env = {**os.environ, "SKYDD_HOME": str(lab_home)}
    audit = subprocess.Popen([SKYDD, "audit", "--level", "d", "--out", str(tmp_path / "killed")],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(KILL_AFTER)
        assert audit.poll() is None, "the audit finished before Keycloak could be killed"
        os.killpg(pid, signal.SIGKILL)
        out, err = audit.communicate(timeout=600)
        print(out[-3000:], err[-3000:])
        other_fails = any(f["status"] == "fail" for c, f in baseline.items()
                          if c not in LEVEL_D_KEYCLOAK)
        assert audit.returncode == (1 if other_fails else 3), (audit.returncode, err[-2000:])
        assert "Traceback" not in err
        faulted = findings(tmp_path / "killed")
        statuses = {c: faulted[c]["status"] for c in LEVEL_D_KEYCLOAK}
        assert set(statuses.values()) == {"error"}, statuses
        assert all(faulted[c]["message"].startswith("could not observe") for c in LEVEL_D_KEYCLOAK)
        for control, finding in baseline.items():
            if control not in LEVEL_D_KEYCLOAK:
                assert faulted[control]["status"] == finding["status"], control
    finally:
        if audit.poll() is None:
            audit.kill()
            audit.wait()
        try:
            os.waitpid(pid, os.WNOHANG)  # reap it when this process started it
        except ChildProcessError:
            pass
        restarted = time.monotonic()
        keycloak.up(lambda msg: print(f"lab keycloak (restart): {msg}"))
    # Later tests need it steadily up: three good readings in a row. (With the default ``ispn``
    # cache the dead node's JDBC_PING entry made the restarted server wait ~20 s for it and its
    # cluster health check report DOWN ~30 s more; the lab starts Keycloak with --cache=local.)
    good, deadline = 0, time.monotonic() + RESTART_SETTLE
    while good < 3 and time.monotonic() < deadline:
        good = good + 1 if keycloak.status()["state"] == "up" else 0
        time.sleep(2)
    assert good >= 3, f"Keycloak did not come back steadily up within {RESTART_SETTLE:.0f} s"
    print(f"Keycloak steadily up {time.monotonic() - restarted:.0f} s after the restart began")


# -- Suricata killed on one IPS firewall ---------------------------------------------------------

VICTIM = "sunne-fw2"  # an IPS firewall, declared fail-closed in the lab inventory
VICTIM_MUNICIPALITY = "sunne"


def lab_plan(home: Path) -> dict[str, Any]:
    """The namespaces and addresses the Suricata fault needs, from the lab inventory: each
    municipality's LAN namespace, the classified host and its declared port, the victim's
    namespace, state folder and declared fail mode."""
    from estate.loader import load_inventory
    from estate.network_plan import classified_segments, inside_segment
    from skydd.lab import LAB_INVENTORY
    from skydd.lab.management import namespace_of

    inv, _ = load_inventory(LAB_INVENTORY, home=home)
    lans = {fw.municipality: namespace_of(f"{fw.site}/{inside_segment(inv, fw).name}")  # type: ignore[union-attr]
            for fw in inv.firewalls if fw.position == 1}
    (victim,) = [fw for fw in inv.firewalls if fw.id == VICTIM]
    (flow,) = [f for f in inv.flows if f.id == "staff-https"]
    return {"lans": lans, "dc": classified_segments(inv)[0].host, "port": flow.port,
            "namespace": namespace_of(victim.id), "fail_mode": victim.fail_mode,
            "ips_dir": Path(str(victim.state_dir)) / "ips"}


def reaches(namespace: str, host: str, port: int) -> bool:
    """Real packets from ``namespace``: True when the connection completed or was refused."""
    from audit.collectors.traffic import _PROBE, BLOCK_TIMEOUT

    done = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", _PROBE, host,
                           str(port), str(BLOCK_TIMEOUT), ""], capture_output=True, text=True, timeout=30)
    return bool(json.loads(done.stdout)["reached"])


def restart_suricata(namespace: str, argvs: list[list[str]]) -> None:
    """Start Suricata again with its own command line (a SIGKILLed one leaves its pid file)."""

    for argv in argvs:
        if ns_suricata_pids(namespace):
            break
        pidfile = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--pidfile"), None)
        if pidfile:
            Path(pidfile).unlink(missing_ok=True)
        subprocess.run(["ip", "netns", "exec", namespace, *argv], capture_output=True, timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(q["queue"] == 0 for q in ns_bound_queues(namespace)):
        time.sleep(0.2)


@pytest.fixture(scope="module")
def level_b_passes(lab_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[Key, str]:
    """Level b as applied: every finding ``pass`` (applied here when an earlier test has not)."""
    ensure_lab("network", lab_home)
    out = tmp_path_factory.mktemp("level-b")
    code, found, text = audit_b(lab_home, out / "first")
    if code != 0:
        applied = skydd_b(lab_home, "apply", "--level", "b")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        code, found, text = audit_b(lab_home, out / "applied")
    not_passing = {k: (f["status"], f["message"]) for k, f in found.items() if f["status"] != "pass"}
    assert code == 0 and not not_passing, (not_passing, text)
    return statuses(found)


@pytest.fixture
def suricata_killed(lab_home: Path, level_b_passes: dict[Key, str]) -> Iterator[dict[str, Any]]:
    """Suricata on ``VICTIM`` SIGKILLed (as a crash: no clean shutdown, its pid file left
    behind); restarted with its own command line afterwards, whatever the test did, and the
    victim's declared flow proven to pass again, so later lab tests see a healthy lab."""
    from audit.collectors.suricata import cmdline

    plan = lab_plan(lab_home)
    ns, lan = plan["namespace"], plan["lans"][VICTIM_MUNICIPALITY]
    pids = ns_suricata_pids(ns)
    assert pids, f"no Suricata runs on {VICTIM} although level b passes"
    assert reaches(lan, plan["dc"], plan["port"]), "the declared flow is blocked with Suricata up"
    argvs = [cmdline(p) for p in pids]
    try:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while ns_suricata_pids(ns) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not ns_suricata_pids(ns), f"Suricata on {VICTIM} survived SIGKILL"
        yield plan
    finally:
        restart_suricata(ns, argvs)
    assert ns_suricata_pids(ns), f"Suricata on {VICTIM} did not start again"
    assert reaches(lan, plan["dc"], plan["port"]), f"{VICTIM} still blocks the declared flow"


def test_suricata_killed_on_one_firewall_holds_its_declared_fail_mode(
        lab_home: Path, level_b_passes: dict[Key, str], suricata_killed: dict[str, Any],
        tmp_path: Path) -> None:
    """What must hold when Suricata dies on ``VICTIM`` (declared fail-closed): real traffic
    from its municipality's LAN to the classified host no longer passes (the queue has no
    listener and no bypass), while the other municipalities' traffic still does; the level b
    audit exits 1 and says so for exactly that firewall: its engine-dependent IPS finding (target:
    the firewall) fails naming the cause (not running, queue without listener), its municipality's
    traffic proof fails (declared flow blocked, fail mode untestable with no engine running),
    its configuration findings (fail mode, rules, drop categories) still pass, and every other
    firewall's and municipality's finding is what it was with Suricata up. Then ``skydd apply
    --control b.ips-inline-prevention`` starts it again and the declared flow passes."""

    plan = suricata_killed
    assert plan["fail_mode"] == "closed"
    for muni, lan in plan["lans"].items():
        passes = reaches(lan, plan["dc"], plan["port"])
        assert passes == (muni != VICTIM_MUNICIPALITY), (muni, passes)

    code, found, text = audit_b(lab_home, tmp_path / "killed")
    print(text[-3000:])
    assert code == 1, text
    assert "Traceback" not in text
    assert set(found) == set(level_b_passes), set(found) ^ set(level_b_passes)
    changed = {k: (f["status"], f["message"]) for k, f in found.items()
               if f["status"] != level_b_passes[k]}
    print("\n".join(f"{c} {t}: {s}: {m}" for (c, t), (s, m) in sorted(changed.items())))
    assert {k: s for k, (s, _) in changed.items()} == {
        ("b.ips-inline-prevention", VICTIM): "fail",  # the engine on that firewall
        ("b.declared-flow-traffic", VICTIM_MUNICIPALITY): "fail",  # its declared flow is blocked
        ("b.ips-blocks-signature", VICTIM_MUNICIPALITY): "fail",  # nothing inspects, eve is silent
        ("b.ips-fail-mode-holds", VICTIM_MUNICIPALITY): "fail",  # no engine to stop and observe
    }, changed

    inline = found[("b.ips-inline-prevention", VICTIM)]["message"]
    assert "Suricata is not running" in inline and "has no listener" in inline, inline
    holds = found[("b.ips-fail-mode-holds", VICTIM_MUNICIPALITY)]["message"]
    assert "no Suricata was running" in holds and "traffic closed" in holds, holds
    for control in ("b.ips-fail-mode", "b.ips-rules-fresh", "b.ips-drop-categories"):
        assert found[(control, VICTIM)]["status"] == "pass", found[(control, VICTIM)]

    # The remediation heals the crash: apply starts Suricata again (past the pid file the
    # SIGKILL left behind) on that firewall, and its declared flow passes again.
    healed = skydd_b(lab_home, "apply", "--level", "b", "--control", "b.ips-inline-prevention")
    assert healed.returncode == 0, healed.stdout[-3000:] + healed.stderr[-3000:]
    assert ns_suricata_pids(plan["namespace"]), healed.stdout[-3000:]
    assert any(q["queue"] == 0 for q in ns_bound_queues(plan["namespace"]))
    assert reaches(plan["lans"][VICTIM_MUNICIPALITY], plan["dc"], plan["port"])


# -- the PostgreSQL primary killed, the mirror promoted -----------------------------------------

# The level a controls judged on the replication evidence (the others are officers' attestations).
REPLICATION_CONTROLS = tuple(c.id for c in load_catalog().controls if c.level.value == "a"
                             and c.applies_to.evidence == "postgres.replication")


@dataclass(frozen=True)
class LabDb:
    """A lab cluster as the fault tests reach it: the inventory's database (its fields read
    through), the folder of its local socket and the prefix that runs a program on its machine."""

    db: Any
    socket: Path
    machine: list[str]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def socialcare_dbs(home: Path) -> tuple[LabDb, LabDb]:
    from estate.loader import load_inventory
    from skydd.lab import LAB_INVENTORY
    from skydd.lab.postgres import machine_of, socket_dir

    inv, _ = load_inventory(LAB_INVENTORY, home=home)
    system = next(s for s in inv.systems if s.id == "socialcare")
    primary, mirror = (LabDb(db, socket_dir(home, inv, db), machine_of(home, inv, db))
                       for db in (system.primary_db, system.mirror_db))
    return primary, mirror


def pg(db: LabDb, dbname: str | None = None) -> Any:
    return psycopg.connect(host=str(db.socket), port=db.port, dbname=dbname or db.name,
                           user="postgres", autocommit=True, connect_timeout=5)


def postmaster_pid(db: Any) -> int | None:
    try:
        pid = int((Path(db.data_dir) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def cluster_processes(postmaster: int) -> list[int]:
    """The postmaster and its children (backends, walsender, checkpointer ...)."""
    out = [postmaster]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == postmaster:
            out.append(int(stat.parent.name))
    return out


def as_postgres(db: LabDb, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*db.machine, "runuser", "-u", "postgres", "--", *cmd],
                          capture_output=True, text=True, timeout=120)


def level_a(home: Path, out: Path) -> tuple[int, dict[str, dict[str, Any]], str]:
    r = skydd(home, "audit", "--level", "a", "--out", str(out))
    text = r.stdout + r.stderr
    assert (out / "report.json").exists(), text
    return r.returncode, findings(out), text


@pytest.fixture(scope="module")
def mirror_streams(lab_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Level a's mirror built and streaming (applied here when an earlier test has not)."""
    from tests.lab.test_level_a import reopen

    ensure_lab("network", lab_home)
    ensure_lab("postgres", lab_home)
    out = tmp_path_factory.mktemp("level-a")
    _, found, text = level_a(lab_home, out / "first")
    if found["a.replication-streaming"]["status"] != "pass":
        reopen(lab_home)
        applied = skydd(lab_home, "apply", "--level", "a")
        assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]
        _, found, text = level_a(lab_home, out / "applied")
    statuses = {c: found[c]["status"] for c in REPLICATION_CONTROLS}
    assert len(statuses) >= 6 and set(statuses.values()) == {"pass"}, (statuses, text)
    return found


def start_cluster(db: LabDb) -> None:
    from skydd.lab.postgres import pg_bin

    started = as_postgres(db, str(pg_bin() / "pg_ctl"), "-D", db.data_dir, "-l",
                          db.log_file, "-w", "-t", "60", "start")
    assert started.returncode == 0, started.stdout[-500:] + started.stderr[-500:]


def stop_cluster(db: LabDb) -> None:
    from skydd.lab.postgres import pg_bin

    stopped = as_postgres(db, str(pg_bin() / "pg_ctl"), "-D", db.data_dir,
                          "-m", "fast", "-w", "-t", "60", "stop")
    assert stopped.returncode == 0, stopped.stderr[-500:]


@pytest.fixture
def primary_killed(lab_home: Path, mirror_streams: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A marker row committed on the primary and replayed on the mirror; then every process of
    the primary's cluster SIGKILLed at once (the machine is gone). Afterwards, whatever the test
    did, the lab is put back: the old primary running again (crash recovery), a promoted mirror
    stopped (its timeline is not the primary's) and rebuilt by ``skydd apply --level a``, a
    standby again."""
    from tests.lab.test_level_a import reopen

    primary, mirror = socialcare_dbs(lab_home)
    marker = f"failover marker {os.getpid()}-{time.time_ns()}"
    with pg(primary) as conn:
        conn.execute("INSERT INTO visits (client_id, note) VALUES (1, %s)", (marker,))
        lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    with pg(mirror) as conn:  # replayed at the fourth site before the primary dies
        deadline = time.monotonic() + 30
        while conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0] is not True:
            assert time.monotonic() < deadline, "the mirror did not replay the marker"
            time.sleep(0.2)
    pid = postmaster_pid(primary)
    assert pid is not None, "the primary is not running"
    procs = cluster_processes(pid)
    try:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        killed = time.monotonic()
        deadline = time.monotonic() + 15
        while any(Path(f"/proc/{p}").exists() for p in procs) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert postmaster_pid(primary) is None
        yield {"primary": primary, "mirror": mirror, "marker": marker, "killed": killed}
    finally:
        if postmaster_pid(primary) is None:
            start_cluster(primary)
        promoted = False
        with contextlib.suppress(psycopg.Error), pg(mirror, "postgres") as conn:
            promoted = conn.execute("SELECT NOT pg_is_in_recovery()").fetchone()[0] is True
        if promoted:  # the lab's operator discards the failover's writes: the role rebuilds
            stop_cluster(mirror)  # a missing data dir, never a promoted cluster's
            shutil.rmtree(mirror.data_dir)
        reopen(lab_home)
        rebuilt = skydd(lab_home, "apply", "--level", "a")
    assert rebuilt.returncode == 0, rebuilt.stdout[-3000:] + rebuilt.stderr[-3000:]
    with pg(mirror) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True


def test_primary_killed_then_mirror_promoted_keeps_the_data_and_the_audit_says_so(
        lab_home: Path, mirror_streams: dict[str, Any], primary_killed: dict[str, Any],
        tmp_path: Path) -> None:
    """What must hold when the primary dies (every process SIGKILLed) and the mirror at the
    fourth site is promoted by hand:

    * primary dead: the level a audit judges no replication control ``pass`` nor ``fail`` on
      evidence it could not observe: each is ``error`` naming the primary as unreachable, the
      audit exits 3, and the attested drills stay as they were;
    * the mirror is promoted within 30 s of the primary's death, holds the row committed and
      replayed before it, takes writes of its own, and runs on a new timeline;
    * the old primary back (its machine restarted): two writable copies, and the audit says
      so: every replication control ``fail`` (the mirror is no standby), exit 1;
    * ``skydd apply --level a`` then refuses to rebuild the promoted mirror (it would discard
      the writes made after the failover): exit 1 naming its databases, the mirror untouched;
      and still when the promoted mirror is down too (it cannot be asked, and its data dir is
      no standby's)."""
    from tests.lab.test_level_a import reopen

    primary, mirror = primary_killed["primary"], primary_killed["mirror"]
    code, found, text = level_a(lab_home, tmp_path / "primary-dead")
    print(text[-2000:])
    assert code == 3, text
    assert "Traceback" not in text
    for control in REPLICATION_CONTROLS:
        f = found[control]
        assert f["status"] == "error", (control, f["status"], f["message"])
        assert "primary database" in f["message"] and "cannot be reached" in f["message"], f["message"]
    for control, f in mirror_streams.items():
        if control not in REPLICATION_CONTROLS:
            assert found[control]["status"] == f["status"], (control, found[control])

    after_failover = f"written after the failover {time.time_ns()}"
    with pg(mirror) as conn:
        assert conn.execute("SELECT pg_promote(wait => true, wait_seconds => 30)").fetchone()[0] is True
        rto = time.monotonic() - primary_killed["killed"]
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
        assert conn.execute("SELECT count(*) FROM visits WHERE note = %s",
                            (primary_killed["marker"],)).fetchone()[0] == 1
        conn.execute("INSERT INTO visits (client_id, note) VALUES (2, %s)", (after_failover,))
        wal = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
    timeline = int(wal[:8], 16)
    print(f"mirror promoted and writable {rto:.1f} s after the primary died, timeline {timeline}")
    assert rto < 30 and timeline >= 2, (rto, timeline)

    start_cluster(primary)  # the old primary's machine comes back
    code, found, text = level_a(lab_home, tmp_path / "split")
    print(text[-2000:])
    assert code == 1, text
    split = {c: (found[c]["status"], found[c]["message"]) for c in REPLICATION_CONTROLS}
    assert {s for s, _ in split.values()} == {"fail"}, split

    reopen(lab_home)
    refused = skydd(lab_home, "apply", "--level", "a")
    out = refused.stdout + refused.stderr
    assert refused.returncode == 1, out[-3000:]
    assert "holds databases of its own" in out and "is not a standby" in out, out[-3000:]
    with pg(mirror) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
        assert conn.execute("SELECT count(*) FROM visits WHERE note = %s",
                            (after_failover,)).fetchone()[0] == 1

    # The promoted mirror goes down too: a cluster that cannot be asked is still not rebuilt
    # when its data dir is a primary's of its own (no standby.signal).
    stop_cluster(mirror)
    reopen(lab_home)
    refused = skydd(lab_home, "apply", "--level", "a")
    out = refused.stdout + refused.stderr
    assert refused.returncode == 1, out[-3000:]
    assert "does not answer and is not a standby" in out, out[-3000:]
    start_cluster(mirror)
    with pg(mirror) as conn:
        assert conn.execute("SELECT count(*) FROM visits WHERE note = %s",
                            (after_failover,)).fetchone()[0] == 1
