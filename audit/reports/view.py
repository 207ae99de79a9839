"""What every rendered format reads from a signed ``report.json``: the level × municipality
matrix, the findings that need attention, the waivers, the drift, and reference titles.

Everything here is derived from the report dict alone (plus the catalog for reference titles),
so HTML, OSCAL and JUnit can never disagree with the signed report.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from policies import Catalog, Level, Status
from policies.model import LEVEL_TITLES

# Worst first: the colour of a matrix cell is that of its worst status.
STATUS_ORDER: tuple[Status, ...] = (Status.FAIL, Status.ERROR, Status.MANUAL, Status.WAIVED,
                                    Status.PASS, Status.NOTAPPLICABLE)
ATTENTION = (Status.FAIL, Status.ERROR, Status.MANUAL)
SEVERITY_ORDER = ("critical", "high", "medium", "low")

STATUS_LABELS = {
    Status.PASS: ("Pass", "Godkänd"),
    Status.FAIL: ("Fail", "Underkänd"),
    Status.ERROR: ("Error", "Kunde inte observeras"),
    Status.NOTAPPLICABLE: ("Not applicable", "Ej tillämplig"),
    Status.MANUAL: ("Manual", "Intyg saknas"),
    Status.WAIVED: ("Waived", "Undantagen"),
}
LEVEL_TITLES_SV = {
    Level.A: "Redundans",
    Level.B: "Perimeterskydd",
    Level.C: "Virtualisering",
    Level.D: "Autentisering",
    Level.E: "Utbildning",
}
OVERALL_LABELS = {
    "compliant": ("Compliant", "Uppfyller kraven"),
    "noncompliant": ("Noncompliant", "Uppfyller inte kraven"),
    "incomplete": ("Incomplete", "Ofullständig"),
}

# The three municipalities of the joint system, always shown; others appear as they occur.
MUNICIPALITIES: tuple[tuple[str, str], ...] = (("torsby", "Torsby"), ("sunne", "Sunne"),
                                               ("hagfors", "Hagfors"))
JOINT = "joint"
OTHER = "other"
MAX_EXTRA_COLUMNS = 8  # beyond this, further municipalities share one column
JOINT_SITES = frozenset({"site4"})


def _column(finding: Mapping[str, Any]) -> str:
    """The matrix column of a finding: its municipality, or ``joint`` for the fourth site and
    for targets that belong to no single municipality."""
    municipality = finding.get("municipality")
    if not municipality or finding.get("site") in JOINT_SITES:
        return JOINT
    return str(municipality)


def worst(statuses: Iterable[str]) -> Status | None:
    """The worst of some statuses (fail first, notapplicable last); ``None`` for none."""
    present = {Status(s) for s in statuses}
    for status in STATUS_ORDER:
        if status in present:
            return status
    return None


_OPTIONAL: dict[str, Any] = {"title": "", "severity": "", "site": None, "municipality": None, "message": "",
             "evidence": None, "observed": None, "remediation": None, "references": {},
             "waiver": None}


def findings_of(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The report's findings with every optional field present (``raw_status`` defaults to
    ``status``), so renderers never trip over a report written by an older Skydd."""
    return [{**_OPTIONAL, "raw_status": f["status"], **f} for f in report["findings"]]


@dataclass(frozen=True)
class Cell:
    counts: Mapping[str, int]  # status -> count, only statuses that occur, worst first

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def worst(self) -> Status | None:
        return worst(self.counts)


@dataclass(frozen=True)
class Row:
    level: Level
    title: str
    title_sv: str
    cells: Mapping[str, Cell]  # column id -> cell


@dataclass(frozen=True)
class Matrix:
    columns: tuple[tuple[str, str], ...]  # (id, label)
    rows: tuple[Row, ...]


def matrix(findings: Sequence[Mapping[str, Any]]) -> Matrix:
    """Rows levels a–e, columns the municipalities then ``joint``; counts per status."""
    known = {m for m, _ in MUNICIPALITIES}
    extra = sorted({_column(f) for f in findings} - known - {JOINT})
    shown = set(extra) if len(extra) <= MAX_EXTRA_COLUMNS else set()
    counts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for f in findings:
        col = _column(f)
        if col not in known and col != JOINT and col not in shown:
            col = OTHER
        counts[(f["level"], col)][f["status"]] += 1
    columns = (*MUNICIPALITIES, *((m, m.replace("-", " ").title()) for m in sorted(shown)),
               *(((OTHER, f"{len(extra)} other municipalities"),) if extra and not shown else ()),
               (JOINT, "Joint / site 4"))
    rows = []
    for level in Level:
        cells = {}
        for col, _ in columns:
            c = counts.get((level.value, col), Counter())
            cells[col] = Cell({s.value: c[s.value] for s in STATUS_ORDER if c[s.value]})
        rows.append(Row(level, LEVEL_TITLES[level], LEVEL_TITLES_SV[level], cells))
    return Matrix(tuple(columns), tuple(rows))


@dataclass(frozen=True)
class Reference:
    framework: str
    framework_title: str
    id: str
    title: str


def references(finding: Mapping[str, Any], catalog: Catalog) -> list[Reference]:
    out = []
    for fw, ids in sorted((finding.get("references") or {}).items()):
        framework = catalog.frameworks.get(fw)
        for rid in ids:
            out.append(Reference(fw, framework.title if framework else fw, rid,
                                 catalog.reference_title(fw, rid) or "(title not in the catalog)"))
    return out


def _sort_key(f: Mapping[str, Any]) -> tuple[int, int, str, str]:
    status = STATUS_ORDER.index(Status(f["status"]))
    sev = SEVERITY_ORDER.index(f["severity"]) if f.get("severity") in SEVERITY_ORDER else 99
    return (status, sev, f["control"], f["target"])


@dataclass(frozen=True)
class LevelGroup:
    level: Level
    title: str
    title_sv: str
    findings: tuple[Mapping[str, Any], ...] = field(default=())


def attention(findings: Sequence[Mapping[str, Any]]) -> list[LevelGroup]:
    """Findings that fail, could not be observed or lack an attestation, grouped by level,
    worst first; levels with none are left out."""
    groups = []
    for level in Level:
        chosen = sorted((f for f in findings if f["level"] == level.value
                         and Status(f["status"]) in ATTENTION), key=_sort_key)
        if chosen:
            groups.append(LevelGroup(level, LEVEL_TITLES[level], LEVEL_TITLES_SV[level],
                                     tuple(chosen)))
    return groups


def waivers(findings: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every waiver that touched a finding, once, with the findings it covered."""
    by_id: dict[str, dict[str, Any]] = {}
    for f in findings:
        w = f.get("waiver")
        if not w:
            continue
        entry = by_id.setdefault(w["id"], {**w, "covers": []})
        entry["covers"].append({"control": f["control"], "target": f["target"],
                                "status": f["status"], "raw_status": f["raw_status"]})
    return sorted(by_id.values(), key=lambda w: (not w.get("expired"), w["expires_at"], w["id"]))


def totals(findings: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Findings per status over the whole report, worst first, only statuses that occur."""
    counts = Counter(f["status"] for f in findings)
    return {s.value: counts[s.value] for s in STATUS_ORDER if counts[s.value]}


def titles(findings: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    return {f["control"]: f.get("title", "") for f in findings}
