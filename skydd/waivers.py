"""Waivers as signed records: four eyes, a maximum lifetime, expiry in UTC.

The audit log is the source of truth. ``skydd waiver request`` appends a ``waiver.request`` entry
and ``approve`` a ``waiver.approve`` entry; each is followed by a signed checkpoint, so a waiver
is signed by the time the command returns. A waiver counts only when both entries are in the
verified log (``signed_waivers``), agree with each other, name an approver other than the
requester, and last no longer than the maximum lifetime (``SKYDD_WAIVER_MAX_DAYS``, default 365).

``$SKYDD_HOME/waivers.json`` is a copy for people and tools, written after the log. An entry in it
that no signed record backs, or that differs from its signed record, is ignored and reported as
tampering (``WaiverLedger.tampering``).

Four eyes by person, not by name (docs/adr/0011-four-eyes.md): each entry carries the officer
block of ``skydd.officers`` (subject, name, and how it is proven: an officer key, a console
login, or for an inventory without a roster the CLI actor). The approver's subject must differ
from the requester's, and with a roster every entry must prove its officer, else the waiver is
void.
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.records import SignedLog, Tampering
from estate.canonical import rfc3339
from estate.errors import InputError
from estate.settings import Settings
from policies import Waiver, load_catalog
from policies.checks import parse_time
from policies.errors import PolicyError

from .officers import OFFICER, VIA_SSO, Officer, Roster, block, officer_of

__all__ = ["APPROVE", "REQUEST", "Officer", "Waiver", "WaiverLedger", "WaiverStore", "approve_waiver",
           "request_waiver", "signed_waivers"]

REQUEST = "waiver.request"
APPROVE = "waiver.approve"
# The fields an approval repeats from its request; they must agree.
_SAME = ("control", "target", "reason", "requester", "requested_at", "expires_at")


def new_request(control: str, target: str | None, reason: str, requester: str,
                expires_at: datetime, at: datetime, max_days: int) -> Waiver:
    """A pending waiver, checked: a reason, a requester, an expiry after ``at`` within
    ``max_days`` of it."""
    if expires_at.tzinfo is None:
        raise InputError("--expires must carry a timezone, e.g. 2027-01-31T00:00:00Z")
    if expires_at <= at:
        raise InputError(f"--expires {rfc3339(expires_at)} is already in the past")
    if expires_at - at > timedelta(days=max_days):
        raise InputError(f"--expires {rfc3339(expires_at)} is more than {max_days} days away: a waiver "
                         f"lasts at most {max_days} days (SKYDD_WAIVER_MAX_DAYS); ask again before it ends")
    if not reason.strip() or not requester.strip():
        raise InputError("a waiver needs a reason and a requester")
    return Waiver(id="w-" + uuid.uuid4().hex[:10], control=control, target=target,
                  reason=reason.strip(), requester=requester.strip(), requested_at=at,
                  expires_at=expires_at)


def approval(w: Waiver, approver: str, at: datetime) -> Waiver:
    """``w`` approved by ``approver`` at ``at``: never by its requester, never twice or late."""
    if w.approver is not None:
        raise InputError(f"waiver {w.id} is already approved by {w.approver}")
    if not approver.strip():
        raise InputError("a waiver needs an approver")
    if approver.strip().casefold() == w.requester.casefold():
        raise InputError(f"waiver {w.id}: the approver must not be the requester")
    if at >= w.expires_at:
        raise InputError(f"waiver {w.id} expired at {rfc3339(w.expires_at)}")
    return Waiver(**{**w.__dict__, "approver": approver.strip(), "approved_at": at})


@dataclass(frozen=True)
class WaiverLedger:
    """The waivers the signed log holds, and the signed ones that nevertheless do not count."""

    log: SignedLog
    signed: Mapping[str, Waiver]  # id -> the waiver as its signed entries say (pending or approved)
    void: Mapping[str, str] = field(default_factory=dict)  # id -> why a signed waiver does not count
    requesters: Mapping[str, Officer] = field(default_factory=dict)  # id -> who requested it
    forged: frozenset[str] = frozenset()  # void ids whose officer-key proof is false: tampering

    def counting(self) -> list[Waiver]:
        """What the engine sees: approved, signed, consistent waivers within the lifetime."""
        return [w for i, w in self.signed.items() if w.approver is not None and i not in self.void]

    def notes(self) -> list[str]:
        return [f"waiver {i} does not count: {why}" for i, why in sorted(self.void.items())
                if i not in self.forged]

    def tampering(self, store: WaiverStore) -> list[Tampering]:
        """Every entry of ``waivers.json`` that no signed record backs exactly."""
        try:
            docs = store.raw()
        except InputError as err:
            return [*(Tampering("waiver", i, self.void[i] + "; it does not count") for i in sorted(self.forged)),
                    Tampering("waiver", store.path.name, f"{err}; it is ignored")]
        out = [Tampering("waiver", i, self.void[i] + "; it does not count") for i in sorted(self.forged)]
        for n, d in enumerate(docs):
            wid = d.get("id") if isinstance(d, dict) else None
            if not isinstance(wid, str):
                out.append(Tampering("waiver", f"{store.path.name}[{n}]",
                                     "an entry without a waiver id; ignored"))
                continue
            problem = self._mismatch(wid, d)
            if problem is not None:
                out.append(Tampering("waiver", wid, problem + "; ignored"))
        return out

    def _mismatch(self, wid: str, doc: Mapping[str, Any]) -> str | None:
        if self.log.problem is not None:
            return None  # the log itself is the problem, reported once (SignedLog.tampering)
        signed = self.signed.get(wid)
        if signed is None:
            return "in waivers.json, but the signed audit log holds no request for it"
        expected = signed.to_dict()
        if doc == expected:
            return None
        if doc.get("approver") and signed.approver is None:
            return "approved in waivers.json, but the signed audit log holds no approval"
        fields = sorted(k for k in set(doc) | set(expected) if doc.get(k) != expected.get(k))
        return f"differs from its signed record in {', '.join(fields)}"


def signed_waivers(log: SignedLog, max_days: int, roster: Roster | None = None) -> WaiverLedger:
    """Rebuild every waiver from the signed ``waiver.request`` and ``waiver.approve`` entries.

    With a ``roster`` (the inventory's officers), an entry counts only when its officer block
    proves its officer (``Roster.problem``); the approver's subject must differ from the
    requester's in every case."""
    roster = roster or Roster()
    signed: dict[str, Waiver] = {}
    void: dict[str, str] = {}
    requesters: dict[str, Officer] = {}
    forged: set[str] = set()
    for entry in log.entries:
        event, data = entry.get("event"), entry.get("data")
        if event not in (REQUEST, APPROVE) or not isinstance(data, Mapping):
            continue
        try:
            w = _from_dict(data)
        except (ValueError, KeyError, TypeError, PolicyError):
            continue  # a signed entry Skydd could not have written: nothing to count
        who = officer_of(data) or Officer(w.requester if event == REQUEST else (w.approver or "?"),
                                          w.requester if event == REQUEST else (w.approver or "?"))
        if event == REQUEST:
            if w.id in signed:
                void.setdefault(w.id, "requested twice in the audit log")
                continue
            signed[w.id] = Waiver(**{**w.__dict__, "approver": None, "approved_at": None})
            requesters[w.id] = who
            problem = roster.problem(REQUEST, data)
            if problem is not None:
                void[w.id] = f"its request does not prove its officer: {problem}"
                if _by_key(data):
                    forged.add(w.id)
            continue
        request = signed.get(w.id)
        if request is None:
            void.setdefault(w.id, "approved in the audit log without a signed request")
            continue
        if request.approver is not None:
            continue  # a second approval adds nothing
        if any(getattr(w, k) != getattr(request, k) for k in _SAME):
            void[w.id] = "its signed approval does not match its signed request"
            continue
        if (not w.approver or w.approved_at is None
                or w.approver.strip().casefold() == w.requester.casefold()
                or who.same_person(requesters[w.id])):
            void[w.id] = "its approval does not name a second person"
            continue
        problem = roster.problem(APPROVE, data)
        if problem is not None:
            void[w.id] = f"its approval does not prove its officer: {problem}"
            if _by_key(data):
                forged.add(w.id)
            continue
        signed[w.id] = w
    for wid, w in signed.items():
        days = (w.expires_at - w.requested_at) / timedelta(days=1)
        if days > max_days:
            void.setdefault(wid, f"it lasts {days:.0f} days, more than the maximum of {max_days} "
                                  "(SKYDD_WAIVER_MAX_DAYS)")
    return WaiverLedger(log, signed, void, requesters, frozenset(forged))


def _by_key(data: Mapping[str, Any]) -> bool:
    """Whether the entry claims an officer-key signature (a false claim is tampering)."""
    b = data.get(OFFICER)
    return isinstance(b, Mapping) and b.get("via") == "key"


def request_waiver(settings: Settings, control: str, target: str | None, reason: str,
                   expires_at: datetime, officer: Officer, at: datetime, *,
                   key: Ed25519PrivateKey | None = None, via: str = VIA_SSO) -> Waiver:
    """Ask for a waiver as ``officer``: a ``waiver.request`` entry in the signed log (then the copy
    in ``waivers.json``). ``key``: the officer's own key signs it (the CLI); without one the entry
    says ``via`` (``sso``: the console vouches for a verified login)."""
    from audit import log
    from audit.signing import load_signer

    if control not in load_catalog().by_id():
        raise InputError(f"{control!r}: no such control")
    w = new_request(control, target, reason, officer.name, expires_at, at, settings.waiver_max_days)
    record = w.to_dict()
    data = {**record, OFFICER: block(REQUEST, record, officer, at, key, via)}
    # The signed log first: waivers.json is only a copy, and an entry in it without a signed
    # record would be reported as tampering.
    log.append(settings.audit_log, load_signer(settings.home), REQUEST, officer.name, data)
    WaiverStore(settings.home).put(w)
    return w


def approve_waiver(settings: Settings, waiver_id: str, officer: Officer, at: datetime, *,
                   key: Ed25519PrivateKey | None = None, via: str = VIA_SSO,
                   roster: Roster | None = None) -> Waiver:
    """Approve ``waiver_id`` as ``officer``: refused (``InputError``) when the officer is the
    requester (same subject), the request is not in the verified log, or it does not count."""
    from audit import log
    from audit.errors import VerificationError
    from audit.records import read_signed_log
    from audit.signing import load_signer

    signer = load_signer(settings.home)
    ledger = signed_waivers(read_signed_log(settings.audit_log, signer.public_key),
                            settings.waiver_max_days, roster)
    if ledger.log.problem is not None:
        raise VerificationError(f"{ledger.log.problem}: no waiver can be approved")
    request = ledger.signed.get(waiver_id)
    if request is None:
        raise InputError(f"no waiver {waiver_id!r} is requested in the signed audit log"
                         f"{_hand_written(settings, waiver_id)}")
    if waiver_id in ledger.void:
        raise InputError(f"waiver {waiver_id} cannot be approved: {ledger.void[waiver_id]}")
    requester = ledger.requesters.get(waiver_id)
    if requester is not None and officer.same_person(requester):
        who = requester.name if requester.name == requester.subject else f"{requester.name}, {requester.subject}"
        raise InputError(f"waiver {waiver_id}: the approver must not be the requester ({who}); "
                         "another officer must approve it (four eyes)")
    w = approval(request, officer.name, at)
    record = w.to_dict()
    data = {**record, OFFICER: block(APPROVE, record, officer, at, key, via)}
    log.append(settings.audit_log, signer, APPROVE, officer.name, data)
    WaiverStore(settings.home).put(w)
    return w


def _hand_written(settings: Settings, waiver_id: str) -> str:
    try:
        docs = WaiverStore(settings.home).raw()
    except InputError:
        return ""
    if any(isinstance(d, dict) and d.get("id") == waiver_id for d in docs):
        return " (waivers.json names it, but nothing signed does: it was written by hand)"
    return ""


class WaiverStore:
    """``$SKYDD_HOME/waivers.json``: the copy of the signed waivers, one entry per waiver."""

    def __init__(self, home: Path) -> None:
        self.path = home / "waivers.json"

    def raw(self) -> list[Any]:
        """The entries as stored; ``InputError`` when the file is not a JSON list."""
        if not self.path.exists():
            return []
        try:
            docs = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise InputError(f"{self.path.name} is not readable JSON ({err})") from err
        if not isinstance(docs, list):
            raise InputError(f"{self.path.name} is not a JSON list")
        return docs

    def put(self, w: Waiver) -> None:
        """Write ``w`` in place of the entry with its id (or add it). Other entries stay as they
        are, so an audit still sees, and reports, any that were written by hand. A file that
        is not a JSON list is replaced."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            try:
                docs = self.raw()
            except InputError:
                docs = []
            docs = [d for d in docs if not (isinstance(d, dict) and d.get("id") == w.id)]
            docs.append(w.to_dict())
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(docs, indent=2) + "\n", encoding="utf-8")
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            tmp.replace(self.path)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


def _from_dict(d: Mapping[str, Any]) -> Waiver:
    target = d.get("target")
    approver = d.get("approver")
    if not all(isinstance(d[k], str) for k in ("id", "control", "reason", "requester")):
        raise TypeError("waiver fields must be strings")
    if target is not None and not isinstance(target, str):
        raise TypeError("target must be a string")
    if approver is not None and not isinstance(approver, str):
        raise TypeError("approver must be a string")
    return Waiver(id=d["id"], control=d["control"], target=target, reason=d["reason"],
                  requester=d["requester"], requested_at=parse_time(d["requested_at"]),
                  expires_at=parse_time(d["expires_at"]), approver=approver,
                  approved_at=parse_time(d["approved_at"]) if d.get("approved_at") else None)


def now() -> datetime:
    return datetime.now(UTC)
