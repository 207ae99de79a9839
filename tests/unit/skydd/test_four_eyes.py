"""Four eyes for real (issue 13 items 3 and 4): officers with a roster of public keys, approvals
by a second person proven by key or console login, and report sign-off in the signed log.

Each attack is what someone at the shell can try: approve their own waiver (by API, or at the CLI
with their own key), sign with a key the roster does not know, claim to be another officer,
change a report after it was signed off, or edit a sign-off in the log.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import log
from audit.records import read_signed_log
from audit.signing import load_home_public_key, load_signer
from estate.errors import InputError
from estate.loader import load_inventory
from estate.settings import Settings
from skydd.cli import main
from skydd.lab.officers import ensure_officer_key, officer_key_paths
from skydd.officers import OFFICER, VIA_KEY, Roster, block, load_roster, read_private_key
from skydd.signoff import sign_off, sign_offs
from skydd.waivers import APPROVE, Officer, WaiverLedger, approve_waiver, request_waiver, signed_waivers

CONTROL = "d.key-files-private"  # fails: the key file below is world-readable
NOW = datetime.now(UTC)
GRETA = Officer("5e1f0a11-0000-4000-8000-000000000001", "Greta Officer", "greta.officer")
OLOF = Officer("5e1f0a11-0000-4000-8000-000000000002", "Olof Officer", "olof.officer")


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


def skydd(home: Path, *args: str, actor: str = "alice") -> Run:
    out, err = io.StringIO(), io.StringIO()
    environ = {"SKYDD_HOME": str(home), "SKYDD_ACTOR": actor}
    code = 0
    with (mock.patch.object(sys, "argv", ["skydd", *args]), mock.patch.dict(os.environ, environ),
          redirect_stdout(out), redirect_stderr(err)):
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return Run(code, out.getvalue(), err.getvalue())


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    for o in (GRETA, OLOF):
        assert o.id is not None
        ensure_officer_key(h, o.id)
    return h


@pytest.fixture
def inv(tmp_path: Path, home: Path) -> Path:
    """An inventory with a roster; Greta's public key by a path relative to the inventory, Olof's
    under ${SKYDD_HOME}."""
    keys = tmp_path / "pki"
    keys.mkdir(mode=0o755)
    (keys / "ca.key").write_text("secret")
    (keys / "ca.key").chmod(0o644)
    (tmp_path / "roster").mkdir()
    shutil.copy(officer_key_paths(home, "greta.officer")[1], tmp_path / "roster" / "greta.pub.pem")
    p = tmp_path / "inventory.yaml"
    p.write_text(f"""
name: test
municipalities: [{{id: torsby, name: Torsby}}]
sites: [{{id: torsby, name: Torsby, municipality: torsby}}]
key_stores: [{{id: pki, site: torsby, path: "{keys}"}}]
officers:
  - {{id: greta.officer, name: {GRETA.name}, subject: {GRETA.subject}, public_key: roster/greta.pub.pem}}
  - {{id: olof.officer, name: {OLOF.name}, subject: {OLOF.subject},
     public_key: "${{SKYDD_HOME}}/lab/officers/olof.officer.pub.pem"}}
""")
    return p


def key(home: Path, oid: str) -> str:
    return "file:" + str(officer_key_paths(home, oid)[0])


def roster(home: Path, inv: Path) -> Roster:
    return load_roster(load_inventory(inv, home=home)[0], inv)


def ledger(home: Path, inv: Path | None = None) -> WaiverLedger:
    return signed_waivers(read_signed_log(home / "audit.log", load_home_public_key(home)), 365,
                          roster(home, inv) if inv else None)


def stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def cli_request(home: Path, inv: Path, oid: str = "greta.officer") -> str:
    r = skydd(home, "waiver", "request", CONTROL, "--reason", "HSM arrives in December",
              "--expires", stamp(NOW + timedelta(days=30)), "--inventory", str(inv),
              "--officer", oid, "--key", key(home, oid))
    assert r.code == 0, r.err
    return r.out.split()[1]


def audited_status(home: Path, inv: Path) -> str:
    skydd(home, "audit", "--inventory", str(inv), "--control", CONTROL)
    (f,) = json.loads((home / "reports" / "latest" / "report.json").read_text())["findings"]
    return str(f["status"])


# --- the API the console uses -------------------------------------------------------------------

def test_api_refuses_approval_by_the_requesting_subject_even_under_another_name(home: Path) -> None:
    s = Settings(home)
    w = request_waiver(s, CONTROL, None, "HSM", NOW + timedelta(days=30), GRETA, NOW)
    with pytest.raises(InputError, match="approver must not be the requester"):
        approve_waiver(s, w.id, Officer(GRETA.subject, "Someone Else"), NOW)
    assert ledger(home).counting() == []
    approved = approve_waiver(s, w.id, OLOF, NOW)
    assert approved.approver == OLOF.name
    assert [x.id for x in ledger(home).counting()] == [w.id]
    entry = read_signed_log(home / "audit.log", load_home_public_key(home)).events(APPROVE)[0]
    assert entry["data"][OFFICER]["subject"] == OLOF.subject and entry["data"][OFFICER]["via"] == "sso"


def test_a_logged_self_approval_under_another_name_does_not_count(home: Path) -> None:
    """Written with the home key (as a compromised console could): the ledger still refuses it."""
    s = Settings(home)
    w = request_waiver(s, CONTROL, None, "HSM", NOW + timedelta(days=30), GRETA, NOW)
    record = {**w.to_dict(), "approver": "Greta's Alias", "approved_at": NOW.isoformat()}
    data = {**record, OFFICER: block(APPROVE, record, Officer(GRETA.subject, "Greta's Alias"), NOW, None, "sso")}
    log.append(home / "audit.log", load_signer(home), APPROVE, "Greta's Alias", data)
    lg = ledger(home)
    assert lg.counting() == [] and lg.void[w.id] == "its approval does not name a second person"


# --- the CLI with a roster ----------------------------------------------------------------------

def test_cli_four_eyes_by_key_then_the_audit_waives(home: Path, inv: Path) -> None:
    wid = cli_request(home, inv)
    own = skydd(home, "waiver", "approve", wid, "--inventory", str(inv),
                "--officer", "greta.officer", "--key", key(home, "greta.officer"))
    assert own.code == 2 and "approver must not be the requester" in own.err
    assert audited_status(home, inv) == "fail"
    ok = skydd(home, "waiver", "approve", wid, "--inventory", str(inv),
               "--officer", "olof.officer", "--key", key(home, "olof.officer"))
    assert ok.code == 0, ok.err
    assert audited_status(home, inv) == "waived"
    listed = json.loads(skydd(home, "waiver", "list", "--format", "json", "--inventory", str(inv)).out)
    assert [(w["id"], w["state"], w["approver"]) for w in listed] == [(wid, "active", OLOF.name)]


def test_cli_refuses_another_officers_key_and_no_key_with_a_roster(home: Path, inv: Path) -> None:
    wid = cli_request(home, inv)
    borrowed = skydd(home, "waiver", "approve", wid, "--inventory", str(inv),
                     "--officer", "olof.officer", "--key", key(home, "greta.officer"))
    assert borrowed.code == 2 and "greta.officer's key, not officer olof.officer's" in borrowed.err
    keyless = skydd(home, "waiver", "approve", wid, "--inventory", str(inv), "--approver", "bob")
    assert keyless.code == 2 and "has an officer roster" in keyless.err
    rogue = home / "rogue.pem"
    rogue.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    r = skydd(home, "waiver", "approve", wid, "--inventory", str(inv), "--officer", "olof.officer",
              "--key", f"file:{rogue}")
    assert r.code == 2 and "no rostered officer's key" in r.err
    assert "Traceback" not in borrowed.err + keyless.err + r.err
    assert ledger(home, inv).counting() == []


def test_keyless_cli_waivers_do_not_count_for_an_inventory_with_a_roster(home: Path, inv: Path) -> None:
    """Without --inventory the CLI still works for automation, but an audit of an inventory with
    a roster does not count what no officer proved."""
    r = skydd(home, "waiver", "request", CONTROL, "--reason", "r", "--expires", stamp(NOW + timedelta(days=9)))
    wid = r.out.split()[1]
    assert skydd(home, "waiver", "approve", wid, actor="bob").code == 0
    assert ledger(home).counting() != []  # no roster: names differ, it counts
    lg = ledger(home, inv)
    assert lg.counting() == [] and "without an officer key" in lg.void[wid]
    r2 = skydd(home, "audit", "--inventory", str(inv), "--control", CONTROL)
    assert f"waiver {wid} does not count" in r2.err
    assert audited_status(home, inv) == "fail"


def test_without_inventory_the_configured_roster_applies_and_a_keyless_waiver_is_warned(
        home: Path, inv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYDD_INVENTORY", str(inv))
    r = skydd(home, "waiver", "request", CONTROL, "--reason", "r", "--expires", stamp(NOW + timedelta(days=9)))
    assert r.code == 0 and f"{inv} has an officer roster" in r.err and "--officer ID" in r.err
    signed = skydd(home, "waiver", "request", CONTROL, "--reason", "HSM", "--expires",
                   stamp(NOW + timedelta(days=9)), "--officer", "greta.officer",
                   "--key", key(home, "greta.officer"))
    assert signed.code == 0 and "officer roster" not in signed.err, signed.err
    wid = signed.out.split()[1]
    own = skydd(home, "waiver", "approve", wid, "--officer", "greta.officer",
                "--key", key(home, "greta.officer"))
    assert own.code != 0  # the configured roster's four eyes hold without --inventory too
    assert skydd(home, "waiver", "approve", wid, "--officer", "olof.officer",
                 "--key", key(home, "olof.officer")).code == 0
    assert audited_status(home, inv) == "waived"


# --- forged proofs in the log -------------------------------------------------------------------

def _approve_forged(home: Path, wid: str, claimed: Officer, signing_key: Ed25519PrivateKey) -> None:
    """What an attacker with the home (and maybe one officer's key) can append: an approval whose
    officer block is signed by ``signing_key`` but names ``claimed``."""
    w = signed_waivers(read_signed_log(home / "audit.log", load_home_public_key(home)), 365).signed[wid]
    record = {**w.to_dict(), "approver": claimed.name, "approved_at": NOW.isoformat()}
    data = {**record, OFFICER: block(APPROVE, record, claimed, NOW, signing_key, VIA_KEY)}
    log.append(home / "audit.log", load_signer(home), APPROVE, claimed.name, data)


def test_an_approval_signed_with_a_key_not_in_the_roster_is_tampering(home: Path, inv: Path) -> None:
    wid = cli_request(home, inv)
    _approve_forged(home, wid, OLOF, Ed25519PrivateKey.generate())
    lg = ledger(home, inv)
    assert lg.counting() == []
    assert "signature does not verify with officer olof.officer's key" in lg.void[wid]
    r = skydd(home, "audit", "--inventory", str(inv), "--control", CONTROL)
    report = json.loads((home / "reports" / "latest" / "report.json").read_text())
    assert [f["status"] for f in report["findings"]] == ["fail"]
    assert [(t["kind"], t["id"]) for t in report["tampering"]] == [("waiver", wid)]
    assert f"tampering: waiver {wid}" in r.err and "olof.officer's key" in r.err


def test_an_entry_claiming_another_officer_is_named(home: Path, inv: Path) -> None:
    wid = cli_request(home, inv)
    _approve_forged(home, wid, OLOF, read_private_key(key(home, "greta.officer")))
    lg = ledger(home, inv)
    assert lg.counting() == []
    assert "claims officer olof.officer but is signed with greta.officer's key" in lg.void[wid]


def test_a_changed_roster_subject_breaks_the_claim(home: Path, inv: Path) -> None:
    wid = cli_request(home, inv)
    _approve_forged(home, wid, Officer("not-olofs-sub", OLOF.name, "olof.officer"),
                    read_private_key(key(home, "olof.officer")))
    assert "not the roster's" in ledger(home, inv).void[wid]


def test_a_console_approval_by_a_subject_outside_the_roster_does_not_count(home: Path, inv: Path) -> None:
    s = Settings(home)
    w = request_waiver(s, CONTROL, None, "HSM", NOW + timedelta(days=30), GRETA, NOW)
    approve_waiver(s, w.id, Officer("intruder-sub", "Mallory"), NOW)
    lg = ledger(home, inv)
    assert lg.counting() == [] and "intruder-sub" in lg.void[w.id]
    assert [x.id for x in ledger(home).counting()] == [w.id]  # without a roster it would


# --- sign-off -----------------------------------------------------------------------------------

def test_a_report_changed_after_sign_off_is_not_signed_off(home: Path, tmp_path: Path) -> None:
    s = Settings(home)
    report = tmp_path / "report.json"
    report.write_bytes(b'{"status": "compliant"}\n')
    done = sign_off(s, report.read_bytes(), GRETA, "checked the evidence", NOW)
    (got,) = sign_offs(s, report.read_bytes())
    assert (got.digest, got.subject, got.comment) == (done.digest, GRETA.subject, "checked the evidence")
    assert skydd(home, "report", "signoffs", str(report)).code == 0
    report.write_bytes(b'{"status": "compliant"} \n')
    assert sign_offs(s, report.read_bytes()) == []
    r = skydd(home, "report", "signoffs", str(report))
    assert r.code == 1 and "not signed off" in r.out


def test_a_sign_off_edited_in_the_log_counts_for_nothing(home: Path, tmp_path: Path) -> None:
    s = Settings(home)
    report = b'{"status": "noncompliant"}\n'
    sign_off(s, report, GRETA, "accepted with waivers", NOW)
    path = home / "audit.log"
    lines = path.read_bytes().splitlines(keepends=True)
    n = next(i for i, line in enumerate(lines) if b'"report.signoff"' in line)
    lines[n] = lines[n].replace(b"accepted with waivers", b"all fine, no waivers!")
    path.write_bytes(b"".join(lines))
    assert sign_offs(s, report) == []
    assert skydd(home, "log", "verify").code != 0


def test_cli_sign_off_with_an_officer_key_and_roster(home: Path, inv: Path, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    report.write_bytes(b"{}\n")
    keyless = skydd(home, "report", "sign-off", str(report), "--inventory", str(inv))
    assert keyless.code == 2 and "has an officer roster" in keyless.err
    r = skydd(home, "report", "sign-off", str(report), "--comment", "ok", "--inventory", str(inv),
              "--officer", "olof.officer", "--key", key(home, "olof.officer"))
    assert r.code == 0, r.err
    listed = json.loads(skydd(home, "report", "signoffs", str(report), "--format", "json",
                              "--inventory", str(inv)).out)
    assert [(x["subject"], x["via"], x["comment"]) for x in listed] == [(OLOF.subject, "key", "ok")]
    # A console sign-off by someone outside the roster is not shown for that inventory.
    sign_off(Settings(home), report.read_bytes(), Officer("intruder-sub", "Mallory"), "", NOW)
    assert len(sign_offs(Settings(home), report.read_bytes(), roster(home, inv))) == 1
    assert len(sign_offs(Settings(home), report.read_bytes())) == 2


# --- the lab's officer keys ---------------------------------------------------------------------

def test_lab_officer_keys_are_private_kept_across_runs_and_removed_by_down(tmp_path: Path) -> None:
    from skydd.lab import LAB_INVENTORY
    from skydd.lab.officers import Service

    svc = Service(tmp_path)
    svc.up(lambda _msg: None)
    private, public = officer_key_paths(tmp_path, "olof.officer")
    first = public.read_bytes()
    assert private.stat().st_mode & 0o777 == 0o600
    svc.up(lambda _msg: None)
    assert public.read_bytes() == first and svc.status()["officers"] == ["greta.officer", "olof.officer"]
    lab = load_roster(load_inventory(LAB_INVENTORY, home=tmp_path)[0], LAB_INVENTORY)
    assert lab.owner_of(read_private_key(f"file:{private}").public_key()) is lab.by_id("olof.officer")
    svc.down(lambda _msg: None)
    assert not private.exists() and svc.status()["state"] == "down"
