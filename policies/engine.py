"""The pure engine: ``evaluate(controls, evidence, waivers, at) -> findings``.

No I/O, no clock: everything arrives as arguments. One finding per control and target of the
evidence kind the control reads. Fail closed: a kind with no evidence at all, a source that
could not be observed, or a path that is missing gives ``error``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from estate.canonical import rfc3339

from .checks import Check
from .errors import EvidenceMissing
from .model import Control, Evidence, Finding, Status, Waiver

_RAW_OK = (Status.PASS, Status.NOTAPPLICABLE)


def index_evidence(evidence: Iterable[Evidence]) -> dict[str, list[Evidence]]:
    by_kind: dict[str, list[Evidence]] = defaultdict(list)
    for e in evidence:
        by_kind[e.kind].append(e)
    return by_kind


def check_status(control: Control, check: Check, data: object, at: datetime
                 ) -> tuple[Status, str, object]:
    """Run one check on evidence data: (raw status, message, observed values)."""
    try:
        if control.applies_to.when is not None:
            gate = control.applies_to.when.evaluate(data, at)
            if not gate.ok:
                return Status.NOTAPPLICABLE, f"not applicable: {gate.detail}", gate.observed
        outcome = check.evaluate(data, at)
    except EvidenceMissing as err:
        return (Status.MANUAL if control.manual else Status.ERROR), str(err), None
    if outcome.ok:
        return Status.PASS, outcome.detail, outcome.observed
    return (Status.MANUAL if control.manual else Status.FAIL), outcome.detail, outcome.observed


def evaluate(controls: Sequence[Control], evidence: Iterable[Evidence] | Mapping[str, list[Evidence]],
             waivers: Sequence[Waiver], at: datetime) -> list[Finding]:
    """Judge every control against the evidence of its kind, then apply waivers."""
    if at.tzinfo is None:
        raise ValueError("at must carry a timezone")
    by_kind = evidence if isinstance(evidence, Mapping) else index_evidence(evidence)
    by_control: dict[str, list[Waiver]] = defaultdict(list)
    for w in waivers:
        if w.approver is not None:
            by_control[w.control].append(w)
    findings: list[Finding] = []
    for control in controls:
        relevant = by_control.get(control.id, [])
        items = by_kind.get(control.applies_to.evidence, [])
        if control.manual:
            # An attestation is about one control: its target is the control id.
            items = [e for e in items if e.target == control.id]
        if not items:
            findings.append(_finding(control, None, Status.MANUAL if control.manual else Status.ERROR,
                                     f"no {control.applies_to.evidence} evidence was collected",
                                     None, relevant, at))
            continue
        for ev in items:
            if ev.error is not None:
                status = Status.MANUAL if control.manual else Status.ERROR
                findings.append(_finding(control, ev, status, f"could not observe: {ev.error}",
                                         None, relevant, at))
                continue
            status, message, observed = check_status(control, control.check, ev.data, at)
            findings.append(_finding(control, ev, status, message, observed, relevant, at))
    return findings


def _finding(control: Control, ev: Evidence | None, raw: Status, message: str, observed: object,
             waivers: Sequence[Waiver], at: datetime) -> Finding:
    target = ev.target if ev else "-"
    status, waiver_info = raw, None
    for w in waivers:
        if not w.covers(control.id, target):
            continue
        expired = not w.active(at)
        waiver_info = {"id": w.id, "reason": w.reason, "requester": w.requester,
                       "approver": w.approver, "expires_at": rfc3339(w.expires_at),
                       "expired": expired}
        if not expired:
            if raw is Status.FAIL:
                status = Status.WAIVED
            break
    if waiver_info and waiver_info["expired"]:
        message += f" (waiver {waiver_info['id']} expired {waiver_info['expires_at']})"
    return Finding(control=control.id, level=control.level, target=target,
                   site=ev.site if ev else None, municipality=ev.municipality if ev else None,
                   status=status, raw_status=raw, message=message,
                   evidence=ev.ref() if ev else None, remediation=control.remediation,
                   references=control.references, severity=control.severity,
                   title=control.title, waiver=waiver_info, observed=observed)


def summarize(findings: Sequence[Finding]) -> dict[str, object]:
    """Overall status and counts per level and status (docs/architecture.md, Contracts)."""
    levels: dict[str, dict[str, int]] = {lvl: {s.value: 0 for s in Status} for lvl in "abcde"}
    for f in findings:
        levels[f.level.value][f.status.value] += 1
    statuses = {f.status for f in findings}
    if Status.FAIL in statuses:
        overall = "noncompliant"
    elif statuses & {Status.ERROR, Status.MANUAL} or not findings:
        overall = "incomplete"
    else:
        overall = "compliant"
    return {"status": overall, "levels": levels}


def exit_code(summary: Mapping[str, object]) -> int:
    """0 compliant, 1 any fail, 3 no fail but an error or a missing attestation."""
    return {"compliant": 0, "noncompliant": 1, "incomplete": 3}[str(summary["status"])]
