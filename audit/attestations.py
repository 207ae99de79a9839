"""Signed officer attestations: the evidence of manual controls.

An officer attests one control (the server room is locked, a failover drill was held) with an
evidence file; Skydd records who, when, until when and the SHA-256 of the file, signs the record
with its Ed25519 key and keeps it, with a copy of the evidence file, under
``$SKYDD_HOME/attestations/``, and logs it in an ``attest`` entry of the audit log. Records are
only ever added; the newest one per control counts. A record counts only when its signature
verifies *and* a signed ``attest`` entry of the audit log names it (``matches_entry``); any other
record in the store is tampering (``AttestationStore.tampering``) and counts as no attestation.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from estate import files
from estate.canonical import canonical_json, rfc3339

from .errors import AuditError, VerificationError
from .records import SignedLog, Tampering
from .signing import Signer, verify

SCHEMA = "skydd.attestation/1"
EVENT = "attest"  # the audit log event of an attestation
# What an ``attest`` entry carries of its record. Entries made before this list grew carry only
# the first three; every field an entry carries must equal the record's.
_LOGGED = ("control", "evidence_digest", "expires_at", "attested_at", "officer", "key_id",
           "signature")
_REQUIRED = _LOGGED[:3]
_CONTROL = re.compile(r"^[a-e]\.[a-z0-9][a-z0-9-]{0,80}$")
_OFFICER = re.compile(r"^[^\x00-\x1f]{1,120}$")


class AttestationError(AuditError):
    """An attestation cannot be recorded (bad control id, dates, evidence file)."""


@dataclass(frozen=True)
class Attestation:
    control: str
    officer: str
    evidence_file: str  # the name it was attested with
    evidence_digest: str  # sha256:<hex> of its bytes
    attested_at: str  # RFC 3339 UTC
    expires_at: str
    key_id: str
    signature: str = ""
    schema: str = SCHEMA

    def signed_part(self) -> dict[str, str]:
        body = asdict(self)
        body.pop("signature")
        return body

    def payload(self) -> bytes:
        return canonical_json(self.signed_part())


def log_data(record: Attestation, path: Path) -> dict[str, str]:
    """The ``data`` of the ``attest`` log entry that makes ``record`` (kept at ``path``) count."""
    return {**{k: getattr(record, k) for k in _LOGGED}, "record": str(path)}


def matches_entry(record: Attestation, data: Mapping[str, Any]) -> bool:
    """Whether a signed ``attest`` entry's data names exactly this record."""
    if not all(k in data for k in _REQUIRED):
        return False
    return all(data[k] == getattr(record, k) for k in _LOGGED if k in data)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def make_attestation(control: str, officer: str, evidence: Path, expires_at: datetime,
                     at: datetime, signer: Signer) -> Attestation:
    """Validate the input and sign a new record (pure but for reading the evidence file)."""
    if not _CONTROL.match(control):
        raise AttestationError(f"control {control!r} is not a control id like c.in-building")
    if not _OFFICER.match(officer.strip()):
        raise AttestationError("officer must be a name of 1–120 printable characters")
    if at.tzinfo is None or expires_at.tzinfo is None:
        raise AttestationError("times must carry a timezone")
    if expires_at <= at:
        raise AttestationError(f"expiry {rfc3339(expires_at)} is not after now ({rfc3339(at)})")
    if not evidence.is_file():
        raise AttestationError(f"evidence file {evidence} does not exist or is not a file")
    try:
        digest = file_digest(evidence)
    except OSError as err:
        raise AttestationError(f"cannot read evidence file {evidence}: {err.strerror}") from err
    unsigned = Attestation(control, officer.strip(), evidence.name, digest, rfc3339(at),
                           rfc3339(expires_at), signer.key_id)
    return Attestation(**{**asdict(unsigned), "signature": signer.sign(unsigned.payload())})


def verify_attestation(record: Attestation, public_key: Ed25519PublicKey) -> None:
    """Raise ``VerificationError`` unless the record is signed by ``public_key``."""
    if record.schema != SCHEMA:
        raise VerificationError(f"unknown attestation schema {record.schema!r}")
    verify(public_key, record.payload(), record.signature)


class AttestationStore:
    """``$SKYDD_HOME/attestations/<control>/<UTC time>.json`` and ``evidence/<digest>``."""

    def __init__(self, home: Path) -> None:
        self.root = home / "attestations"

    def add(self, record: Attestation, evidence: Path) -> Path:
        """Keep the evidence file and the record, each written whole or not at all."""
        folder = self.root / record.control
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        kept = self.root / "evidence" / record.evidence_digest.replace(":", "-")
        kept.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not kept.exists():
            files.replace(kept, evidence.read_bytes())
        stamp = record.attested_at.replace(":", "").replace("-", "")
        path = folder / f"{stamp}.json"
        n = 1
        while path.exists():
            path = folder / f"{stamp}-{n}.json"
            n += 1
        files.replace(path, (json.dumps(asdict(record), indent=2, sort_keys=True) + "\n").encode())
        return path

    def records(self, control: str) -> Iterator[tuple[Path, Attestation | str]]:
        """Every record of a control, oldest first; an unreadable one is its problem as text."""
        folder = self.root / control
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
                yield path, Attestation(**doc)
            except (OSError, ValueError, TypeError) as err:
                yield path, f"{path.name}: unreadable attestation: {err}"

    def controls(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _CONTROL.match(p.name))

    def latest(self, control: str, public_key: Ed25519PublicKey | None, signed: SignedLog
               ) -> tuple[Attestation | None, str | None]:
        """The newest record that verifies and that the signed log names, or why there is none."""
        best: Attestation | None = None
        problem: str | None = None
        for path, rec in self.records(control):
            why = self._problem(path, rec, public_key, signed, control)
            if why is not None:
                problem = why
                continue
            assert isinstance(rec, Attestation)
            if best is None or rec.attested_at >= best.attested_at:
                best = rec
        if best is None and problem is None:
            problem = f"no attestation of {control} is recorded"
        return best, problem

    def tampering(self, public_key: Ed25519PublicKey | None, signed: SignedLog) -> list[Tampering]:
        """Every record in the store that does not count because the signed log does not back it.

        A log that does not verify is one problem of its own (``SignedLog.tampering``), not
        one per record; a home without a key has nothing to compare with.
        """
        if public_key is None or signed.problem is not None:
            return []
        out = []
        for control in self.controls():
            for path, rec in self.records(control):
                why = self._problem(path, rec, public_key, signed, control)
                if why is not None:
                    out.append(Tampering("attestation", str(path.relative_to(self.root)), why))
        return out

    @staticmethod
    def _problem(path: Path, rec: Attestation | str, public_key: Ed25519PublicKey | None,
                 signed: SignedLog, control: str) -> str | None:
        if isinstance(rec, str):
            return rec
        if public_key is None:
            return "Skydd has no signing key to verify attestations with"
        if signed.problem is not None:
            return f"no attestation counts: {signed.problem}"
        try:
            verify_attestation(rec, public_key)
        except VerificationError as err:
            return f"attestation {path.name} of {rec.attested_at} does not verify: {err}"
        if rec.control != control:
            return f"attestation {path.name} filed under {control} is for {rec.control}"
        if not any(matches_entry(rec, e.get("data") or {}) for e in signed.events(EVENT)):
            return (f"attestation {path.name} of {rec.attested_at} is not in the signed audit log "
                    "(written by hand, or its 'attest' entry was never signed)")
        return None


def parse_expiry(text: str, at: datetime) -> datetime:
    """``2027-03-01`` (end of that day, UTC) or an RFC 3339 time; must lie after ``at``."""
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            when = datetime.fromisoformat(text).replace(tzinfo=UTC).replace(hour=23, minute=59, second=59)
        else:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as err:
        raise AttestationError(f"--expires {text!r}: use a date like 2027-03-01 or an RFC 3339 time") from err
    if when.tzinfo is None:
        raise AttestationError(f"--expires {text!r}: give a timezone (e.g. Z)")
    if when <= at:
        raise AttestationError(f"--expires {text!r} is not in the future")
    return when.astimezone(UTC)
