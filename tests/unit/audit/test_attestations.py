"""Officer attestations: signed, stored, collected, judged — and refused when bad."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from audit import log
from audit.attestations import (
    EVENT,
    AttestationError,
    AttestationStore,
    log_data,
    make_attestation,
    parse_expiry,
)
from audit.collectors import run_collectors
from audit.collectors.attestation import AttestationCollector
from audit.signing import load_signer
from policies import Status, evaluate, load_catalog

AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
IN_BUILDING = load_catalog().by_id()["c.in-building"]


def _evidence(tmp_path: Path) -> Path:
    f = tmp_path / "inspection-2026-11.pdf"
    f.write_bytes(b"%PDF-1.7 server room inspection: doors locked, badge log reviewed\n")
    return f


def _judge(home: Path, at: datetime) -> list[tuple[str, Status, str]]:
    ev = run_collectors([AttestationCollector(home, ["c.in-building", "a.failover-drill"])],
                        clock=lambda: at)
    return [(f.target, f.status, f.message) for f in evaluate([IN_BUILDING], ev, [], at)]


def _attest(home: Path, evidence: Path, *, control: str = "c.in-building",
            expires: datetime = AT + timedelta(days=300), at: datetime = AT) -> Path:
    signer = load_signer(home)
    record = make_attestation(control, "Anna Lind", evidence, expires, at, signer)
    path = AttestationStore(home).add(record, evidence)
    log.append(home / "audit.log", signer, EVENT, "Anna Lind", log_data(record, path))  # as `skydd attest`
    return path


def test_missing_attestation_is_manual(tmp_path: Path) -> None:
    # Another control's (missing) attestation is not this control's business.
    [(target, status, message)] = _judge(tmp_path, AT)
    assert (target, status) == ("c.in-building", Status.MANUAL)
    assert "no attestation of c.in-building" in message


def test_signed_attestation_passes_until_it_expires(tmp_path: Path) -> None:
    path = _attest(tmp_path, _evidence(tmp_path))
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    record = json.loads(path.read_text())
    assert record["officer"] == "Anna Lind" and record["evidence_digest"].startswith("sha256:")
    kept = tmp_path / "attestations" / "evidence" / record["evidence_digest"].replace(":", "-")
    assert kept.read_bytes() == _evidence(tmp_path).read_bytes()
    now = {t: (s, m) for t, s, m in _judge(tmp_path, AT + timedelta(days=1))}
    assert now["c.in-building"][0] is Status.PASS and "Anna Lind" in now["c.in-building"][1]
    later = {t: s for t, s, _ in _judge(tmp_path, AT + timedelta(days=301))}
    assert later["c.in-building"] is Status.MANUAL


def test_tampered_attestation_counts_as_none(tmp_path: Path) -> None:
    path = _attest(tmp_path, _evidence(tmp_path))
    doc = json.loads(path.read_text())
    doc["expires_at"] = "2099-01-01T00:00:00.000000Z"
    path.write_text(json.dumps(doc))
    ev = run_collectors([AttestationCollector(tmp_path, ["c.in-building"])], clock=lambda: AT)
    assert ev[0].error is not None and "does not verify" in ev[0].error
    assert [s for _, s, _ in _judge(tmp_path, AT)] == [Status.MANUAL]


def test_attestation_signed_by_another_key_counts_as_none(tmp_path: Path) -> None:
    other = tmp_path / "other"
    record = make_attestation("c.in-building", "Mallory", _evidence(tmp_path), AT + timedelta(days=30),
                              AT, load_signer(other))
    load_signer(tmp_path)  # this home's own key
    AttestationStore(tmp_path).add(record, _evidence(tmp_path))
    assert [s for _, s, _ in _judge(tmp_path, AT)] == [Status.MANUAL]


@pytest.mark.parametrize(("control", "expires", "match"), [
    ("in-building", AT + timedelta(days=1), "not a control id"),
    ("c.in-building", AT - timedelta(days=1), "not after now"),
])
def test_bad_input_is_refused(tmp_path: Path, control: str, expires: datetime, match: str) -> None:
    with pytest.raises(AttestationError, match=match):
        make_attestation(control, "Anna", _evidence(tmp_path), expires, AT, load_signer(tmp_path))
    with pytest.raises(AttestationError, match="does not exist"):
        make_attestation("c.in-building", "Anna", tmp_path / "none.pdf", AT + timedelta(days=1), AT,
                         load_signer(tmp_path))


def test_parse_expiry() -> None:
    assert parse_expiry("2027-03-01", AT) == datetime(2027, 3, 1, 23, 59, 59, tzinfo=UTC)
    assert parse_expiry("2027-03-01T10:00:00Z", AT) == datetime(2027, 3, 1, 10, tzinfo=UTC)
    for bad in ("yesterday", "2020-01-01", "2027-03-01T10:00:00"):
        with pytest.raises(AttestationError):
            parse_expiry(bad, AT)


def _skydd(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "skydd", *args], capture_output=True, text=True,
                          env={"SKYDD_HOME": str(home), "PATH": "/usr/bin:/bin"}, timeout=120)


def test_cli_attests_logs_and_refuses_bad_input(tmp_path: Path) -> None:
    home = tmp_path / "home"
    evidence = _evidence(tmp_path)
    ok = _skydd(home, "attest", "c.in-building", "--evidence", str(evidence), "--expires", "2099-12-31",
                "--officer", "Anna Lind")
    assert ok.returncode == 0, ok.stderr
    assert "attested by Anna Lind" in ok.stdout
    assert list((home / "attestations" / "c.in-building").glob("*.json"))
    entries = [json.loads(line) for line in (home / "audit.log").read_text().splitlines()]
    assert any(e.get("event") == "attest" and e["data"]["control"] == "c.in-building" for e in entries)
    for args, match in [
        (("c.no-such", "--evidence", str(evidence), "--expires", "2099-01-01"), "no such control"),
        (("c.esxi-ssh-disabled", "--evidence", str(evidence), "--expires", "2099-01-01"), "only manual"),
        (("c.in-building", "--evidence", str(tmp_path / "x"), "--expires", "2099-01-01"), "does not exist"),
        (("c.in-building", "--evidence", str(evidence), "--expires", "2001-01-01"), "not in the future"),
    ]:
        bad = _skydd(home, "attest", *args)
        assert bad.returncode == 2, (args, bad.stderr)
        assert match in bad.stderr and "Traceback" not in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
