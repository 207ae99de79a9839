"""Report sign-off: an officer vouches for a report, by digest, in the signed audit log.

``sign_off`` appends a ``report.signoff`` entry (the SHA-256 of the report's bytes, the officer's
subject and name, the time and a comment, and the officer block of ``skydd.officers``) followed by
a signed checkpoint. ``sign_offs`` returns the sign-offs of the verified log whose digest is that
of the given bytes: a report changed after sign-off (one byte) has none, and an entry edited in
the log makes the log fail verification, so then no sign-off counts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from estate.canonical import rfc3339
from estate.errors import InputError
from estate.settings import Settings

from .officers import OFFICER, VIA_SSO, Officer, Roster, block, officer_of

SIGNOFF = "report.signoff"
MAX_COMMENT = 2000


@dataclass(frozen=True)
class SignOff:
    digest: str  # "sha256:<hex>" of the report's bytes
    subject: str
    name: str
    at: datetime
    comment: str
    officer_id: str | None = None
    via: str | None = None  # "key", "sso" or "actor" (skydd.officers)

    def to_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "subject": self.subject, "name": self.name,
                "at": rfc3339(self.at), "comment": self.comment, "officer_id": self.officer_id,
                "via": self.via}


def report_digest(report_bytes: bytes) -> str:
    return "sha256:" + hashlib.sha256(report_bytes).hexdigest()


def sign_off(settings: Settings, report_bytes: bytes, officer: Officer, comment: str, at: datetime, *,
             key: Ed25519PrivateKey | None = None, via: str = VIA_SSO) -> SignOff:
    """Record that ``officer`` signs off the report ``report_bytes`` at ``at``."""
    from audit import log
    from audit.signing import load_signer

    if not report_bytes:
        raise InputError("an empty report cannot be signed off")
    comment = comment.strip()
    if len(comment) > MAX_COMMENT:
        raise InputError(f"a sign-off comment is at most {MAX_COMMENT} characters")
    record = {"digest": report_digest(report_bytes), "subject": officer.subject, "name": officer.name,
              "at": rfc3339(at), "comment": comment}
    b = block(SIGNOFF, record, officer, at, key, via)
    log.append(settings.audit_log, load_signer(settings.home), SIGNOFF, officer.name, {**record, OFFICER: b})
    return SignOff(record["digest"], officer.subject, officer.name, at, comment, officer.id, b["via"])


def sign_offs(settings: Settings, report_bytes: bytes, roster: Roster | None = None) -> list[SignOff]:
    """The sign-offs of exactly these bytes in the verified audit log, oldest first; none when the
    log does not verify. With a ``roster``, only entries that prove their officer count."""
    from audit.records import read_signed_log
    from audit.signing import load_home_public_key

    try:
        public_key = load_home_public_key(settings.home)
    except FileNotFoundError:
        return []
    signed = read_signed_log(settings.audit_log, public_key)
    if signed.problem is not None:
        return []
    digest = report_digest(report_bytes)
    out = []
    for entry in signed.events(SIGNOFF):
        data = entry.get("data")
        if not isinstance(data, Mapping) or data.get("digest") != digest:
            continue
        s = _from_entry(data)
        if s is None or (roster or Roster()).problem(SIGNOFF, data) is not None:
            continue
        out.append(s)
    return out


def _from_entry(data: Mapping[str, Any]) -> SignOff | None:
    officer = officer_of(data)
    if officer is None or data.get("subject") != officer.subject or data.get("name") != officer.name:
        return None
    comment, at = data.get("comment"), data.get("at")
    if not isinstance(comment, str) or not isinstance(at, str):
        return None
    try:
        when = datetime.fromisoformat(at.replace("Z", "+00:00"))
    except ValueError:
        return None
    b = data[OFFICER]
    return SignOff(str(data["digest"]), officer.subject, officer.name, when, comment, officer.id,
                   b.get("via") if isinstance(b.get("via"), str) else None)
