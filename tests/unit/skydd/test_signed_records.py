"""Waivers and attestations count only as signed records in the audit log (issue 12, item 2).

Each attack is what someone with write access to ``$SKYDD_HOME`` but without the signing key can
do: write ``waivers.json`` or an attestation record by hand, or edit the log. Every one runs
through the real ``skydd`` entry point on an inventory that needs no services.
"""

from __future__ import annotations

import io
import json
import os
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

import pytest

from audit.records import SignedLog
from skydd.cli import main
from skydd.waivers import APPROVE, REQUEST, signed_waivers

CONTROL = "d.key-files-private"  # fails: the key file below is world-readable
ROOM = "c.in-building"  # manual: passes only with an attestation
NOW = datetime.now(UTC)


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


def skydd(home: Path, *args: str, actor: str = "alice", **env: str) -> Run:
    """The real CLI entry, in this process (argv, environment and output swapped for the call)."""
    out, err = io.StringIO(), io.StringIO()
    environ = {"SKYDD_HOME": str(home), "SKYDD_ACTOR": actor, **env}
    with (mock.patch.object(sys, "argv", ["skydd", *args]), mock.patch.dict(os.environ, environ),
          redirect_stdout(out), redirect_stderr(err)):
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return Run(code, out.getvalue(), err.getvalue())


@pytest.fixture
def inv(tmp_path: Path) -> str:
    keys = tmp_path / "pki"
    keys.mkdir(mode=0o755)
    (keys / "ca.key").write_text("secret")
    (keys / "ca.key").chmod(0o644)
    p = tmp_path / "inventory.yaml"
    p.write_text(f"""
name: test
municipalities: [{{id: torsby, name: Torsby}}]
sites: [{{id: torsby, name: Torsby, municipality: torsby}}]
key_stores: [{{id: pki, site: torsby, path: "{keys}"}}]
""")
    return str(p)


def stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def audit(home: Path, inv: str, control: str, **env: str) -> tuple[Run, dict]:
    r = skydd(home, "audit", "--inventory", inv, "--control", control, **env)
    return r, json.loads((home / "reports" / "latest" / "report.json").read_text())


def request(home: Path, days: int = 30, **env: str) -> str:
    r = skydd(home, "waiver", "request", CONTROL, "--reason", "HSM arrives in December",
              "--expires", stamp(NOW + timedelta(days=days)), **env)
    assert r.code == 0, r.err
    return r.out.split()[1]


def test_a_hand_written_approved_waiver_is_ignored_and_reported(tmp_path: Path, inv: str) -> None:
    home = tmp_path / "home"
    assert skydd(home, "audit", "--inventory", inv, "--control", CONTROL).code == 1  # key, log
    forged = {"id": "w-forged0001", "control": CONTROL, "target": None, "reason": "trust me",
              "requester": "mallory", "requested_at": stamp(NOW), "expires_at": stamp(NOW + timedelta(days=30)),
              "approver": "bob", "approved_at": stamp(NOW)}
    (home / "waivers.json").write_text(json.dumps([forged]))

    r, report = audit(home, inv, CONTROL)

    assert r.code == 1, r.err  # today: exit 0, the fail waived
    (f,) = report["findings"]
    assert (f["status"], f["waiver"]) == ("fail", None)
    assert report["tampering"] == [{"kind": "waiver", "id": "w-forged0001", "problem":
                                    "in waivers.json, but the signed audit log holds no request "
                                    "for it; ignored"}]
    assert "warning: tampering: waiver w-forged0001" in r.err
    html = (home / "reports" / "latest" / "report.html").read_text()
    assert 'data-tampering="waiver"' in html and "w-forged0001" in html
    assert skydd(home, "report", "verify", str(home / "reports" / "latest" / "report.json")).code == 0


def test_approving_by_hand_a_signed_request_does_not_waive(tmp_path: Path, inv: str) -> None:
    home = tmp_path / "home"
    wid = request(home)
    docs = json.loads((home / "waivers.json").read_text())
    docs[0].update(approver="bob", approved_at=stamp(NOW))
    (home / "waivers.json").write_text(json.dumps(docs))

    r, report = audit(home, inv, CONTROL)

    assert r.code == 1 and report["findings"][0]["status"] == "fail"
    assert report["tampering"] == [{"kind": "waiver", "id": wid, "problem":
                                    "approved in waivers.json, but the signed audit log holds no "
                                    "approval; ignored"}]
    # The approval must go through the log; then it counts and nothing is tampering.
    assert skydd(home, "waiver", "approve", wid, actor="bob").code == 0
    r, report = audit(home, inv, CONTROL)
    assert r.code == 0 and report["findings"][0]["status"] == "waived" and report["tampering"] == []


def test_approve_refuses_a_waiver_only_waivers_json_names(tmp_path: Path) -> None:
    home = tmp_path / "home"
    request(home)
    forged = {"id": "w-forged0002", "control": CONTROL, "target": None, "reason": "r",
              "requester": "mallory", "requested_at": stamp(NOW), "expires_at": stamp(NOW + timedelta(days=3)),
              "approver": None, "approved_at": None}
    docs = json.loads((home / "waivers.json").read_text())
    (home / "waivers.json").write_text(json.dumps([*docs, forged]))
    r = skydd(home, "waiver", "approve", "w-forged0002", actor="bob")
    assert r.code == 2 and "written by hand" in r.err
    listed = skydd(home, "waiver", "list", "--format", "json")
    assert [w["state"] for w in json.loads(listed.out)] == ["pending"]
    assert "tampering: waiver w-forged0002" in listed.err


def test_a_log_that_does_not_verify_lets_no_waiver_count(tmp_path: Path, inv: str) -> None:
    home = tmp_path / "home"
    wid = request(home)
    assert skydd(home, "waiver", "approve", wid, actor="bob").code == 0
    log = home / "audit.log"
    lines = log.read_bytes().splitlines(keepends=True)
    n = next(i for i, line in enumerate(lines) if b'"waiver.request"' in line)
    lines[n] = lines[n].replace(b"HSM arrives", b"HSM arrived")
    log.write_bytes(b"".join(lines))

    r, report = audit(home, inv, CONTROL)

    assert r.code == 1 and report["findings"][0]["status"] == "fail"
    assert [t["kind"] for t in report["tampering"]] == ["log"]
    assert "does not verify" in report["tampering"][0]["problem"]
    assert "warning: tampering: log audit.log" in r.err
    assert skydd(home, "waiver", "list").code == 1


def test_entries_appended_without_the_key_count_for_nothing(tmp_path: Path, inv: str) -> None:
    """A chained but unsigned request and approval at the end of the log: nothing counts, the
    report is still written and signed, but not anchored (the writer refuses the tail)."""
    from audit.log import line_hash
    from estate.canonical import canonical_json

    home = tmp_path / "home"
    assert skydd(home, "audit", "--inventory", inv, "--control", CONTROL).code == 1
    log = home / "audit.log"
    last = log.read_bytes().splitlines()[-1]
    w = {"id": "w-tail00001", "control": CONTROL, "target": None, "reason": "r", "requester": "mallory",
         "requested_at": stamp(NOW), "expires_at": stamp(NOW + timedelta(days=9)),
         "approver": None, "approved_at": None}
    with log.open("ab") as fh:
        for event, data in [(REQUEST, w), (APPROVE, {**w, "approver": "bob", "approved_at": stamp(NOW)})]:
            line = canonical_json({"seq": json.loads(last)["seq"] + 1, "at": stamp(NOW), "event": event,
                                   "actor": "mallory", "data": data, "prev": line_hash(last)})
            fh.write(line + b"\n")
            last = line

    r, report = audit(home, inv, CONTROL)

    assert r.code == 1 and report["findings"][0]["status"] == "fail"
    assert [t["kind"] for t in report["tampering"]] == ["log"] and "not signed" in report["tampering"][0]["problem"]
    assert "log" not in report and "report not anchored" in r.err
    assert skydd(home, "report", "verify", str(home / "reports" / "latest" / "report.json")).code == 0


def test_a_waiver_beyond_the_maximum_lifetime_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    r = skydd(home, "waiver", "request", CONTROL, "--reason", "r",
              "--expires", stamp(NOW + timedelta(days=366)))
    assert r.code == 2 and "at most 365 days" in r.err  # today: accepted
    r = skydd(home, "waiver", "request", CONTROL, "--reason", "r",
              "--expires", stamp(NOW + timedelta(days=40)), SKYDD_WAIVER_MAX_DAYS="30")
    assert r.code == 2 and "at most 30 days" in r.err
    r = skydd(home, "waiver", "list", SKYDD_WAIVER_MAX_DAYS="many")
    assert r.code == 2 and "SKYDD_WAIVER_MAX_DAYS" in r.err
    assert not (home / "waivers.json").exists()


def test_a_signed_waiver_beyond_the_lifetime_now_in_force_does_not_count(tmp_path: Path, inv: str) -> None:
    home = tmp_path / "home"
    wid = request(home, days=300)
    assert skydd(home, "waiver", "approve", wid, actor="bob").code == 0
    r, report = audit(home, inv, CONTROL, SKYDD_WAIVER_MAX_DAYS="90")
    assert r.code == 1 and report["findings"][0]["status"] == "fail"
    assert f"waiver {wid} does not count: it lasts 300 days, more than the maximum of 90" in r.err


def test_a_hand_written_attestation_is_ignored_and_reported(tmp_path: Path, inv: str) -> None:
    home = tmp_path / "home"
    evidence = tmp_path / "inspection.pdf"
    evidence.write_bytes(b"%PDF server room inspected\n")
    assert skydd(home, "audit", "--inventory", inv, "--control", ROOM).code == 3  # manual
    folder = home / "attestations" / ROOM
    folder.mkdir(parents=True)
    (folder / "20990101T000000.000000Z.json").write_text(json.dumps({
        "control": ROOM, "officer": "Mallory", "evidence_file": "inspection.pdf",
        "evidence_digest": "sha256:" + "0" * 64, "attested_at": stamp(NOW),
        "expires_at": stamp(NOW + timedelta(days=100)), "key_id": "ed25519:0000000000000000",
        "signature": "AAAA", "schema": "skydd.attestation/1"}))

    r, report = audit(home, inv, ROOM)

    assert r.code == 3 and report["findings"][0]["status"] == "manual"
    (t,) = report["tampering"]
    assert (t["kind"], t["id"]) == ("attestation", f"{ROOM}/20990101T000000.000000Z.json")
    assert "does not verify" in t["problem"]
    assert f"warning: tampering: attestation {ROOM}/" in r.err

    # The officer's own attestation goes through the log and counts; the forgery stays reported.
    ok = skydd(home, "attest", ROOM, "--evidence", str(evidence), "--expires", stamp(NOW + timedelta(days=200)),
               "--officer", "Anna Lind")
    assert ok.code == 0, ok.err
    r, report = audit(home, inv, ROOM)
    assert r.code == 0 and report["findings"][0]["status"] == "pass"
    assert [t["kind"] for t in report["tampering"]] == ["attestation"]


def test_an_attestation_signed_with_the_key_but_not_logged_does_not_count(tmp_path: Path, inv: str) -> None:
    """A record replayed from elsewhere (another home's copy, a backup) carries a good signature but
    no entry in this log: it does not count."""
    from audit.attestations import AttestationStore, make_attestation
    from audit.signing import load_signer

    home = tmp_path / "home"
    evidence = tmp_path / "inspection.pdf"
    evidence.write_bytes(b"%PDF\n")
    record = make_attestation(ROOM, "Anna", evidence, NOW + timedelta(days=30), NOW, load_signer(home))
    AttestationStore(home).add(record, evidence)

    r, report = audit(home, inv, ROOM)

    assert r.code == 3 and report["findings"][0]["status"] == "manual"
    (t,) = report["tampering"]
    assert "not in the signed audit log" in t["problem"]


def test_every_report_is_anchored_in_the_log(tmp_path: Path, inv: str) -> None:
    home = tmp_path / "home"
    _, report = audit(home, inv, CONTROL)  # a fresh home: the audit's own entry makes the anchor
    size, head = report["log"]["size"], report["log"]["head"]
    lines = (home / "audit.log").read_bytes().splitlines()
    assert json.loads(lines[size - 1])["event"] == "checkpoint"
    run = json.loads(lines[size - 2])
    assert (run["event"], run["data"]["report"]) == ("audit.run", report["id"])
    assert head.startswith("sha256:")
    r = skydd(home, "log", "verify", "--anchor", str(home / "reports" / "latest" / "report.json"))
    assert r.code == 0, r.out + r.err


def _log(*entries: tuple[str, dict]) -> SignedLog:
    return SignedLog(Path("audit.log"), tuple({"event": e, "data": d} for e, d in entries))


def _waiver(**changes: object) -> dict:
    return {"id": "w-1", "control": CONTROL, "target": None, "reason": "r", "requester": "alice",
            "requested_at": stamp(NOW), "expires_at": stamp(NOW + timedelta(days=10)),
            "approver": None, "approved_at": None, **changes}


@pytest.mark.parametrize(("entries", "void"), [
    ([(REQUEST, _waiver()), (APPROVE, _waiver(approver="bob", approved_at=stamp(NOW)))], None),
    ([(APPROVE, _waiver(approver="bob", approved_at=stamp(NOW)))], "without a signed request"),
    ([(REQUEST, _waiver()), (APPROVE, _waiver(approver="Alice", approved_at=stamp(NOW)))],
     "second person"),
    ([(REQUEST, _waiver()), (APPROVE, _waiver(approver="bob", approved_at=stamp(NOW),
                                              expires_at=stamp(NOW + timedelta(days=99))))],
     "does not match"),
])
def test_signed_entries_that_do_not_make_a_waiver(entries: list, void: str | None) -> None:
    ledger = signed_waivers(_log(*entries), 365)
    if void is None:
        assert [w.approver for w in ledger.counting()] == ["bob"]
    else:
        assert ledger.counting() == [] and void in ledger.void["w-1"]
