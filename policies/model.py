"""The control model: levels, statuses, controls, evidence, findings and waivers.

Values are frozen; vocabularies are ``str`` enums so they serialise as their value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from functools import cached_property
from typing import Any

from estate.canonical import digest_of, rfc3339


class Level(str, Enum):
    """The five security levels."""

    A = "a"  # redundancy
    B = "b"  # perimeter
    C = "c"  # virtualization
    D = "d"  # authentication
    E = "e"  # training


LEVEL_TITLES = {
    Level.A: "Redundancy",
    Level.B: "Perimeter",
    Level.C: "Virtualization",
    Level.D: "Authentication",
    Level.E: "Training",
}


class Status(str, Enum):
    """The status of a finding (docs/architecture.md, Contracts)."""

    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"
    NOTAPPLICABLE = "notapplicable"
    MANUAL = "manual"
    WAIVED = "waived"


class Severity(str, Enum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


@dataclass(frozen=True)
class Remediation:
    playbook: str
    tags: tuple[str, ...]
    disruptive: bool = False


@dataclass(frozen=True)
class AppliesTo:
    """Which evidence a control reads (one finding per target) and when it applies."""

    evidence: str
    when: Any = None  # a Check; when it does not hold, the finding is notapplicable


@dataclass(frozen=True)
class Control:
    id: str
    level: Level
    title: str
    description: str
    rationale: str
    severity: Severity
    references: Mapping[str, tuple[str, ...]]
    applies_to: AppliesTo
    check: Any  # policies.checks.Check
    remediation: Remediation | None
    path: str = ""  # the control.yaml it came from

    @property
    def manual(self) -> bool:
        return getattr(self.check, "manual", False)


@dataclass(frozen=True)
class Evidence:
    """What a collector observed about one target, or why it could not observe it."""

    kind: str
    target: str
    source: str
    collected_at: datetime
    data: Mapping[str, Any] | None = None
    error: str | None = None
    site: str | None = None
    municipality: str | None = None
    digest: str = ""

    @staticmethod
    def observed(kind: str, target: str, source: str, collected_at: datetime,
                 data: Mapping[str, Any], *, site: str | None = None,
                 municipality: str | None = None) -> Evidence:
        return Evidence(kind, target, source, collected_at, data=data, site=site,
                        municipality=municipality, digest=digest_of(data))

    @staticmethod
    def unobserved(kind: str, target: str, source: str, collected_at: datetime, error: str,
                   *, site: str | None = None, municipality: str | None = None) -> Evidence:
        return Evidence(kind, target, source, collected_at, error=error, site=site,
                        municipality=municipality, digest=digest_of({"error": error}))

    def ref(self) -> dict[str, str]:
        return dict(self._ref)

    @cached_property
    def _ref(self) -> dict[str, str]:
        # Many findings share one piece of evidence: format its time once.
        return {"source": self.source, "collected_at": rfc3339(self.collected_at),
                "digest": self.digest}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "target": self.target, "source": self.source,
                               "collected_at": rfc3339(self.collected_at), "digest": self.digest,
                               "site": self.site, "municipality": self.municipality}
        if self.error is not None:
            out["error"] = self.error
        else:
            out["data"] = self.data
        return out


@dataclass(frozen=True)
class Waiver:
    """A four-eyes exception to one control, optionally for one target, until ``expires_at``."""

    id: str
    control: str
    target: str | None  # None: every target of the control
    reason: str
    requester: str
    requested_at: datetime
    expires_at: datetime
    approver: str | None = None
    approved_at: datetime | None = None

    def covers(self, control: str, target: str) -> bool:
        return self.control == control and self.target in (None, target)

    def active(self, at: datetime) -> bool:
        return self.approver is not None and at < self.expires_at

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "control": self.control, "target": self.target,
                "reason": self.reason, "requester": self.requester,
                "requested_at": rfc3339(self.requested_at), "expires_at": rfc3339(self.expires_at),
                "approver": self.approver,
                "approved_at": rfc3339(self.approved_at) if self.approved_at else None}


@dataclass(frozen=True)
class Finding:
    control: str
    level: Level
    target: str
    site: str | None
    municipality: str | None
    status: Status
    raw_status: Status
    message: str
    evidence: Mapping[str, str] | None
    remediation: Remediation | None
    references: Mapping[str, tuple[str, ...]]
    severity: Severity
    title: str
    waiver: Mapping[str, Any] | None = None
    observed: Any = field(default=None, compare=False)  # the evidence values that decided it

    def to_dict(self) -> dict[str, Any]:
        return {
            "control": self.control, "level": self.level.value, "title": self.title,
            "severity": self.severity.value, "target": self.target, "site": self.site,
            "municipality": self.municipality, "status": self.status.value,
            "raw_status": self.raw_status.value, "message": self.message,
            "evidence": dict(self.evidence) if self.evidence else None,
            "observed": self.observed,
            "remediation": ({"playbook": self.remediation.playbook,
                             "tags": list(self.remediation.tags),
                             "disruptive": self.remediation.disruptive}
                            if self.remediation else None),
            "references": {k: list(v) for k, v in self.references.items()},
            "waiver": dict(self.waiver) if self.waiver else None,
        }
