"""What the console's pages show and do, read from and written to the Skydd home: the latest
signed report (its matrix and sign-offs), the waivers rebuilt from the verified audit log, and
the log's own verification. Writes go through ``skydd.waivers`` and ``skydd.signoff`` with
``via=sso``: the console vouches for the officer it verified at sign-in."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from estate.errors import InputError
from estate.settings import Settings

from ...officers import VIA_SSO, Officer, Roster
from ...signoff import SignOff, report_digest, sign_offs
from ...signoff import sign_off as _sign_off
from ...waivers import Waiver, approve_waiver, request_waiver, signed_waivers


def _public_key(settings: Settings) -> Any:
    from audit.signing import load_home_public_key

    try:
        return load_home_public_key(settings.home)
    except FileNotFoundError:
        return None


def latest_report(settings: Settings) -> Path | None:
    """``reports/latest/report.json``, else the newest ``reports/*/report.json``."""
    latest = settings.reports / "latest" / "report.json"
    if latest.is_file():
        return latest
    found = [p for p in settings.reports.glob("*/report.json") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


@dataclass
class ReportView:
    path: Path | None = None
    problem: str | None = None
    report: dict[str, Any] = field(default_factory=dict)
    digest: str = ""
    matrix: Any = None
    statuses: tuple[str, ...] = ()
    signoffs: list[SignOff] = field(default_factory=list)
    attention: list[Any] = field(default_factory=list)  # audit.reports.view.LevelGroup
    drift: dict[str, Any] = field(default_factory=dict)


def report_view(settings: Settings, roster: Roster | None = None) -> ReportView:
    """The latest report, verified with the home's key; its matrix and its sign-offs."""
    from audit.errors import VerificationError
    from audit.reports import view
    from audit.reports.json_report import verify_report_bytes

    path = latest_report(settings)
    if path is None:
        return ReportView(problem=f"no report under {settings.reports} yet: run 'skydd audit'")
    key = _public_key(settings)
    if key is None:
        return ReportView(path, problem="this home has no signing key, so no report can be verified")
    try:
        data = path.read_bytes()
        report = verify_report_bytes(data, key).report
    except (OSError, VerificationError, InputError) as err:
        return ReportView(path, problem=f"{path.name} does not verify: {err}")
    findings = view.findings_of(report)
    return ReportView(path, None, dict(report), report_digest(data), view.matrix(findings),
                      tuple(s.value for s in view.STATUS_ORDER), sign_offs(settings, data, roster),
                      view.attention(findings), dict(report.get("drift") or {}))


def matrix_view(settings: Settings) -> ReportView:
    return report_view(settings)


@dataclass
class Trend:
    problem: str | None
    levels: tuple[str, ...]
    audits: list[dict[str, Any]]  # newest first: generated_at, status, per level {status: n}


def trend(settings: Settings, inventory: str | None, limit: int = 12) -> Trend:
    """Per level, the findings per status of the last ``limit`` audits of ``inventory`` in the
    history store (``SKYDD_HISTORY_URL`` or ``$SKYDD_HOME/history.db``)."""
    from audit.history import History, HistoryError
    from policies import Level

    levels = tuple(lv.value for lv in Level)
    if not inventory:
        return Trend("no report yet, so no inventory to show the history of", levels, [])
    try:
        with History(settings.history_url) as h:
            rows = h.audits(inventory, limit)
    except HistoryError as err:
        return Trend(str(err), levels, [])
    out = []
    for row in rows:
        per: dict[str, dict[str, int]] = {lv: {} for lv in levels}
        for key, status in (row.get("statuses") or {}).items():
            level = str(key).split(".", 1)[0]
            if level in per:
                per[level][status] = per[level].get(status, 0) + 1
        at = row["generated_at"]
        out.append({"id": row["id"], "generated_at": at.isoformat() if isinstance(at, datetime) else str(at),
                    "status": row["status"], "levels": per})
    return Trend(None, levels, out)


def sign_off(settings: Settings, digest: str, officer: Officer, comment: str, at: datetime) -> SignOff:
    """Sign off the latest report, only if it is still the one the officer saw (``digest``)."""
    path = latest_report(settings)
    if path is None:
        raise InputError("there is no report to sign off")
    data = path.read_bytes()
    if not digest or report_digest(data) != digest:
        raise InputError("the latest report changed since the page was shown: reload and check it again")
    current = report_view(settings)
    if current.problem is not None:
        raise InputError(current.problem)
    return _sign_off(settings, data, officer, comment, at, via=VIA_SSO)


@dataclass
class WaiversView:
    problem: str | None
    waivers: list[Waiver]
    void: dict[str, str]
    requesters: dict[str, Officer]


def waivers_view(settings: Settings, roster: Roster) -> WaiversView:
    from audit.records import read_signed_log

    ledger = signed_waivers(read_signed_log(settings.audit_log, _public_key(settings)),
                            settings.waiver_max_days, roster)
    waivers = sorted(ledger.signed.values(), key=lambda w: w.requested_at, reverse=True)
    return WaiversView(ledger.log.problem, waivers, dict(ledger.void), dict(ledger.requesters))


def control_ids() -> list[str]:
    from policies import load_catalog

    return sorted(load_catalog().by_id())


def request(settings: Settings, control: str, target: str | None, reason: str, expires_at: datetime,
            officer: Officer, at: datetime) -> Waiver:
    return request_waiver(settings, control, target, reason, expires_at, officer, at, via=VIA_SSO)


def approve(settings: Settings, waiver_id: str, officer: Officer, at: datetime, roster: Roster) -> Waiver:
    return approve_waiver(settings, waiver_id, officer, at, via=VIA_SSO, roster=roster)


@dataclass
class LogView:
    path: Path
    ok: bool
    detail: str
    entries: int
    events: dict[str, int]


def log_view(settings: Settings) -> LogView:
    """The audit log's verification against the home's key: every entry covered by a signed
    checkpoint, the hash chain unbroken."""
    from audit.records import read_signed_log

    signed = read_signed_log(settings.audit_log, _public_key(settings))
    events: dict[str, int] = {}
    for e in signed.entries:
        name = str(e.get("event"))
        events[name] = events.get(name, 0) + 1
    if signed.problem is not None:
        return LogView(settings.audit_log, False, signed.problem, 0, {})
    detail = (f"{len(signed.entries)} signed entries verify with this home's key"
              if settings.audit_log.exists() else "no audit log yet (nothing signed)")
    return LogView(settings.audit_log, True, detail, len(signed.entries), dict(sorted(events.items())))


DUE_DAYS = 30


@dataclass
class AttestationRow:
    control: str
    title: str
    state: str  # valid | due | expired | missing
    officer: str = ""
    expires_at: str = ""
    detail: str = ""


def attestations_view(settings: Settings, at: datetime) -> list[AttestationRow]:
    """Each manual control's newest attestation that verifies and that the signed log names:
    expired, due within DUE_DAYS days, valid, or missing (with why)."""
    from datetime import timedelta

    from audit.attestations import AttestationStore
    from audit.records import read_signed_log
    from policies import load_catalog
    from policies.checks import parse_time

    key = _public_key(settings)
    signed = read_signed_log(settings.audit_log, key)
    store = AttestationStore(settings.home)
    rows = []
    for cid, control in sorted(load_catalog().by_id().items()):
        if not control.manual:
            continue
        rec, problem = store.latest(cid, key, signed)
        if rec is None:
            rows.append(AttestationRow(cid, control.title, "missing", detail=problem or ""))
            continue
        expires = parse_time(rec.expires_at)
        state = "expired" if expires <= at else "due" if expires <= at + timedelta(days=DUE_DAYS) else "valid"
        rows.append(AttestationRow(cid, control.title, state, rec.officer, rec.expires_at))
    order = {"expired": 0, "missing": 1, "due": 2, "valid": 3}
    return sorted(rows, key=lambda r: (order[r.state], r.control))


def trend_png(t: Trend) -> bytes:
    """The trend as a PNG line chart (matplotlib, Agg; no pyplot state): per level, the share of
    applicable findings that pass (waived counts as passing), oldest audit left."""
    import io

    from matplotlib.figure import Figure

    audits = list(reversed(t.audits))
    fig = Figure(figsize=(8, 3.2), dpi=100)
    ax = fig.subplots()
    xs = list(range(len(audits)))
    for level in t.levels:
        ys: list[float | None] = []
        for a in audits:
            counts = a["levels"][level]
            applicable = sum(n for s, n in counts.items() if s != "notapplicable")
            passing = counts.get("pass", 0) + counts.get("waived", 0)
            ys.append(100.0 * passing / applicable if applicable else None)
        if any(y is not None for y in ys):
            ax.plot([x for x, y in zip(xs, ys, strict=True) if y is not None],
                    [y for y in ys if y is not None], marker="o", label=f"level {level}")
    ax.set_ylim(-5, 105)
    ax.set_ylabel("findings passing, %")
    ax.set_xticks(xs, [str(a["generated_at"])[:16].replace("T", " ") for a in audits], rotation=20,
                  fontsize=7, ha="right")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize=8, ncols=5)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
