"""The pure engine: statuses, fail-closed behaviour and waivers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from policies import Evidence, Status, Waiver, evaluate, exit_code, summarize
from policies.checks import parse_check
from policies.model import AppliesTo, Control, Level, Remediation, Severity

AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def control(cid: str = "b.default-deny", check=None, when=None, level: Level = Level.B) -> Control:
    return Control(id=cid, level=level, title="t", description="d", rationale="r",
                   severity=Severity.HIGH, references={"nis2": ("21(2)(e)",)},
                   applies_to=AppliesTo("nft.firewall", parse_check(when, "x") if when else None),
                   check=check or parse_check({"path": "policy", "equals": "drop"}, "x"),
                   remediation=Remediation("level_b.yml", (cid,)))


def ev(target: str, data=None, error=None, kind="nft.firewall") -> Evidence:
    if error:
        return Evidence.unobserved(kind, target, "nft:" + target, AT, error, site="torsby")
    return Evidence.observed(kind, target, "nft:" + target, AT, data, site="torsby",
                             municipality="torsby")


def test_one_finding_per_target_with_raw_and_effective_status() -> None:
    findings = evaluate([control()], [ev("fw1", {"policy": "drop"}), ev("fw2", {"policy": "accept"})], [], AT)
    assert [(f.target, f.status, f.raw_status) for f in findings] == [
        ("fw1", Status.PASS, Status.PASS), ("fw2", Status.FAIL, Status.FAIL)]
    assert findings[1].evidence["digest"].startswith("sha256:")
    assert "accept" in findings[1].message


@pytest.mark.parametrize("evidence,why", [
    ([], "no nft.firewall evidence"),
    ([ev("fw1", error="connection refused")], "connection refused"),
    ([ev("fw1", {"other": 1})], "no 'policy'"),
])
def test_unobservable_is_error_never_pass(evidence, why) -> None:
    (f,) = evaluate([control()], evidence, [], AT)
    assert f.status is Status.ERROR and why in f.message


def test_applies_when_gives_notapplicable() -> None:
    c = control(when={"path": "classified", "equals": True})
    (f,) = evaluate([c], [ev("vm1", {"classified": False, "policy": "accept"})], [], AT)
    assert f.status is Status.NOTAPPLICABLE


def waiver(**kw) -> Waiver:
    base = dict(id="w-1", control="b.default-deny", target="fw2", reason="vendor patch due",
                requester="alice", requested_at=AT - timedelta(days=1),
                expires_at=AT + timedelta(days=30), approver="bob", approved_at=AT)
    return Waiver(**{**base, **kw})


def test_active_waiver_turns_fail_into_waived_and_keeps_raw() -> None:
    findings = evaluate([control()], [ev("fw2", {"policy": "accept"})], [waiver()], AT)
    assert findings[0].status is Status.WAIVED and findings[0].raw_status is Status.FAIL
    assert findings[0].waiver["approver"] == "bob"


def test_expired_waiver_stops_applying_and_says_so() -> None:
    (f,) = evaluate([control()], [ev("fw2", {"policy": "accept"})],
                    [waiver(expires_at=AT - timedelta(seconds=1))], AT)
    assert f.status is Status.FAIL and f.waiver["expired"] and "expired" in f.message


def test_unapproved_or_other_target_waiver_does_not_apply() -> None:
    assert evaluate([control()], [ev("fw2", {"policy": "accept"})],
                    [waiver(approver=None, approved_at=None)], AT)[0].status is Status.FAIL
    assert evaluate([control()], [ev("fw2", {"policy": "accept"})],
                    [waiver(target="fw1")], AT)[0].status is Status.FAIL


def test_waiver_never_hides_an_error() -> None:
    (f,) = evaluate([control()], [ev("fw2", error="timeout")], [waiver()], AT)
    assert f.status is Status.ERROR


def test_manual_control_without_attestation_is_manual() -> None:
    c = Control(id="c.room-attested", level=Level.C, title="t", description="d", rationale="r",
                severity=Severity.MEDIUM, references={}, applies_to=AppliesTo("attestation"),
                check=parse_check({"attested": {"max_age": "365d"}}, "x"), remediation=None)
    (f,) = evaluate([c], [], [], AT)
    assert f.status is Status.MANUAL
    old = Evidence.observed("attestation", "c.room-attested", "attest", AT,
                            {"attested_at": "2025-01-01T00:00:00Z", "expires_at": "2027-01-01T00:00:00Z"})
    assert evaluate([c], [old], [], AT)[0].status is Status.MANUAL
    fresh = Evidence.observed("attestation", "c.room-attested", "attest", AT,
                              {"attested_at": "2026-06-01T00:00:00Z", "expires_at": "2027-01-01T00:00:00Z"})
    assert evaluate([c], [fresh], [], AT)[0].status is Status.PASS
    other = Evidence.observed("attestation", "c.other-control", "attest", AT, fresh.data)
    assert evaluate([c], [other], [], AT)[0].status is Status.MANUAL


def test_summary_and_exit_codes() -> None:
    ok = evaluate([control()], [ev("fw1", {"policy": "drop"})], [], AT)
    bad = evaluate([control()], [ev("fw1", {"policy": "accept"})], [], AT)
    err = evaluate([control()], [ev("fw1", error="down")], [], AT)
    assert [exit_code(summarize(x)) for x in (ok, bad, err, bad + err)] == [0, 1, 3, 1]
    assert summarize(bad + err)["levels"]["b"] == {
        "pass": 0, "fail": 1, "error": 1, "notapplicable": 0, "manual": 0, "waived": 0}
    assert summarize([])["status"] == "incomplete"


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError):
        evaluate([control()], [], [], datetime(2026, 1, 1))
