"""``report.oscal.json``: OSCAL assessment-results built with compliance-trestle's models, so
the document is validated as it is built.

One result holds one observation per piece of evidence (collected time and digest), one finding
per Skydd finding (objective ``satisfied`` / ``not-satisfied`` for its control and target), and
one risk per waiver (``deviation-approved`` with the expiry as ``deadline``; an expired waiver is
an ``open`` risk). UUIDs are name-based (v5) on the report id, so rendering the same signed
report twice gives the same document.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from trestle.oscal import OSCAL_VERSION
from trestle.oscal import common as oc
from trestle.oscal.assessment_results import AssessmentResults, ImportAp, Result

from policies import Status

from . import view
from .output import atomic_write

NS = "urn:skydd:oscal"
_ROOT = uuid.UUID("6f2a3c1e-5b7d-5e0a-9c4f-2d1b8e7a6c30")

# Skydd status -> (objective state, reason)
_OBJECTIVE = {
    Status.PASS: ("satisfied", "pass"),
    Status.NOTAPPLICABLE: ("satisfied", "other"),
    Status.FAIL: ("not-satisfied", "fail"),
    Status.WAIVED: ("not-satisfied", "fail"),
    Status.ERROR: ("not-satisfied", "other"),
    Status.MANUAL: ("not-satisfied", "other"),
}


def _uuid(report_id: str, *parts: str) -> str:
    return str(uuid.uuid5(_ROOT, "|".join((report_id, *parts))))


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _props(**values: Any) -> list[oc.Property] | None:
    props = [oc.Property(name=name.replace("_", "-"), value=str(v), ns=NS)
             for name, v in values.items() if v not in (None, "")]
    return props or None


def _evidence_key(f: Mapping[str, Any]) -> tuple[str, str, str, str] | None:
    ev = f.get("evidence")
    if not ev:
        return None
    return (ev["source"], f["target"], ev["collected_at"], ev["digest"])


def build_oscal(report: Mapping[str, Any]) -> AssessmentResults:
    rid = report["id"]
    generated = _time(report["generated_at"])
    tool = oc.Origin(actors=[oc.OriginActor(type="tool", actor_uuid=_uuid("skydd", "tool"))])
    findings = view.findings_of(report)

    observations: dict[tuple[str, str, str, str], oc.Observation] = {}
    for f in findings:
        key = _evidence_key(f)
        if key is None or key in observations:
            continue
        source, target, collected, digest = key
        observations[key] = oc.Observation(
            uuid=_uuid(rid, "observation", *key),
            title=f"Evidence from {source} about {target}",
            description=f"What {source} showed about {target} at {collected}.",
            methods=["TEST"], types=["discovery"], origins=[tool],
            subjects=[oc.SubjectReference(subject_uuid=_uuid(rid, "subject", target),
                                          type="inventory-item", title=target)],
            relevant_evidence=[oc.RelevantEvidence(description=f"{source} evidence, digest {digest}")],
            collected=_time(collected),
            props=_props(evidence_source=source, evidence_digest=digest),
        )

    risks: dict[str, oc.Risk] = {}
    for f in findings:
        w = f.get("waiver")
        if not w or w["id"] in risks:
            continue
        expired = bool(w.get("expired"))
        related = [oc.RelatedObservation(observation_uuid=observations[k].uuid)
                   for k in {_evidence_key(g) for g in findings
                             if (g.get("waiver") or {}).get("id") == w["id"]} if k in observations]
        risks[w["id"]] = oc.Risk(
            uuid=_uuid(rid, "risk", w["id"]),
            title=f"Waiver {w['id']} for {f['control']}",
            description=w["reason"],
            statement=(f"Deviation from {f['control']} requested by {w['requester']} and approved "
                       f"by {w['approver']} until {w['expires_at']}"
                       + (" (expired: no longer applies)." if expired else ".")),
            status="open" if expired else "deviation-approved",
            deadline=_time(w["expires_at"]),
            origins=[tool],
            props=_props(waiver_id=w["id"], control=f["control"], requester=w["requester"],
                         approver=w["approver"], expired=str(expired).lower()),
            related_observations=related or None,
        )

    oscal_findings = []
    for f in findings:
        status = Status(f["status"])
        state, reason = _OBJECTIVE[status]
        key = _evidence_key(f)
        w = f.get("waiver")
        oscal_findings.append(oc.Finding(
            uuid=_uuid(rid, "finding", f["control"], f["target"]),
            title=f"{f['control']} on {f['target']}: {f['status']}",
            description=f["message"] or f["title"] or f["control"],
            origins=[tool],
            target=oc.FindingTarget(
                type="objective-id", target_id=f["control"], title=f["title"] or f["control"],
                description=f"{f['control']} evaluated on {f['target']}",
                status=oc.ObjectiveStatus(state=state, reason=reason),
                props=_props(target=f["target"])),
            props=_props(status=f["status"], raw_status=f["raw_status"], level=f["level"],
                         severity=f.get("severity"), target=f["target"], site=f.get("site"),
                         municipality=f.get("municipality")),
            related_observations=([oc.RelatedObservation(observation_uuid=observations[key].uuid)]
                                  if key in observations else None),
            related_risks=([oc.AssociatedRisk(risk_uuid=risks[w["id"]].uuid)]
                           if w and w["id"] in risks else None),
        ))

    controls = sorted({f["control"] for f in findings})
    reviewed = oc.ReviewedControls(control_selections=[
        oc.ControlSelections(include_controls=[oc.SelectControlById(control_id=c) for c in controls])
        if controls else oc.ControlSelectionsAll(include_all=oc.IncludeAll())])
    collected_times = [o.collected for o in observations.values()]
    result = Result(
        uuid=_uuid(rid, "result"),
        title=f"Skydd audit of {report['inventory']['name']}",
        description=(f"Automated audit {rid}: overall {report['summary']['status']}, "
                     f"{len(findings)} findings."),
        start=min(collected_times, default=generated), end=generated,
        props=_props(report_id=rid, overall=report["summary"]["status"],
                     inventory_digest=report["inventory"]["digest"],
                     catalog_digest=report["catalog"]["digest"]),
        reviewed_controls=reviewed,
        observations=list(observations.values()) or None,
        risks=list(risks.values()) or None,
        findings=oscal_findings or None,
    )
    signature = report.get("signature") or {}
    metadata = oc.Metadata(
        title=f"Skydd assessment results: {report['inventory']['name']}",
        last_modified=generated, published=generated, version=rid, oscal_version=OSCAL_VERSION,
        props=_props(report_schema=report["schema"], signature_key_id=signature.get("key_id")),
    )
    ar = AssessmentResults(
        uuid=_uuid(rid, "assessment-results"), metadata=metadata,
        import_ap=ImportAp(href="report.json",
                           remarks=(f"The plan is the Skydd catalog {report['catalog']['version']} "
                                    f"({report['catalog']['digest']}) and the selection in the "
                                    "signed report.json beside this file.")),
        results=[result])
    return ar


def write_oscal(report: Mapping[str, Any], out_dir: Path) -> Path:
    document = build_oscal(report).oscal_serialize_json_bytes(pretty=True)  # {"assessment-results": …}
    return atomic_write(out_dir / "report.oscal.json", document + b"\n")
