"""Officers: who acts on a waiver or a report, and how the signed log proves it.

An ``Officer`` is the acting person (the SSO ``sub`` and the name). Every ``waiver.request``,
``waiver.approve`` and ``report.signoff`` entry carries an *officer block*::

    {"subject": ..., "name": ..., "id": roster id or null, "via": "key" | "sso" | "actor",
     "signature": base64 Ed25519 over the payload (via "key" only)}

- ``key``: made at the CLI with the officer's own Ed25519 key; the roster (the inventory's
  ``officers:``) holds the public half, and the signature covers the record, the action, the
  officer and the time (``payload``).
- ``sso``: made by the console for the subject of a verified card + OTP login; the console holds
  the home's signing key, so the log's signed checkpoint is the proof.
- ``actor``: made at the CLI without a key, naming ``$SKYDD_ACTOR``; it counts only for an
  inventory without a roster.

``Roster.problem`` says why a block does not prove its officer (docs/adr/0011-four-eyes.md).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from estate.canonical import canonical_json, rfc3339
from estate.errors import InputError
from estate.inventory import Inventory

VIA_KEY, VIA_SSO, VIA_ACTOR = "key", "sso", "actor"
OFFICER = "officer"  # the key of the officer block in an entry's data


@dataclass(frozen=True)
class Officer:
    """The acting person: ``subject`` is the SSO ``sub`` (stable), ``name`` is for people; ``id``
    is the roster id when the officer is known to the inventory."""

    subject: str
    name: str
    id: str | None = None

    def __post_init__(self) -> None:
        if not self.subject.strip() or not self.name.strip():
            raise InputError("an officer needs a subject and a name")

    def same_person(self, other: Officer) -> bool:
        return self.subject == other.subject


@dataclass(frozen=True)
class RosterEntry:
    officer: Officer
    public_key: Ed25519PublicKey | None  # None: the roster's key file could not be read (why: unreadable)
    unreadable: str | None = None


def payload(action: str, record: Mapping[str, Any], officer: Officer, at: str) -> bytes:
    """What an officer's key signs: the record (without the officer block), the action, the
    officer and the time, as canonical JSON."""
    body = {k: v for k, v in record.items() if k != OFFICER}
    return canonical_json({"action": action, "record": body, "officer": officer.id,
                           "subject": officer.subject, "name": officer.name, "at": at})


def block(action: str, record: Mapping[str, Any], officer: Officer, at: datetime,
          key: Ed25519PrivateKey | None, via: str) -> dict[str, Any]:
    """The officer block for an entry; signed with ``key`` when one is given."""
    out: dict[str, Any] = {"subject": officer.subject, "name": officer.name, "id": officer.id,
                           "via": VIA_KEY if key is not None else via, "at": rfc3339(at)}
    if key is not None:
        if officer.id is None:
            raise InputError("an officer key signs only for a rostered officer (--officer ID)")
        out["signature"] = base64.b64encode(key.sign(payload(action, record, officer, out["at"]))).decode("ascii")
    return out


def officer_of(data: Mapping[str, Any]) -> Officer | None:
    """The officer an entry's block names, or None when it has none (or a malformed one)."""
    b = data.get(OFFICER)
    if not isinstance(b, Mapping):
        return None
    subject, name, oid = b.get("subject"), b.get("name"), b.get("id")
    if not isinstance(subject, str) or not isinstance(name, str) or not (oid is None or isinstance(oid, str)):
        return None
    try:
        return Officer(subject, name, oid)
    except InputError:
        return None


@dataclass(frozen=True)
class Roster:
    """The inventory's officers with their public keys; empty: no roster (four eyes by name)."""

    entries: tuple[RosterEntry, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.entries)

    def by_id(self, oid: str) -> RosterEntry | None:
        return next((e for e in self.entries if e.officer.id == oid), None)

    def by_subject(self, subject: str) -> RosterEntry | None:
        return next((e for e in self.entries if e.officer.subject == subject), None)

    def owner_of(self, public_key: Ed25519PublicKey) -> RosterEntry | None:
        raw = _raw(public_key)
        return next((e for e in self.entries if e.public_key is not None and _raw(e.public_key) == raw), None)

    def problem(self, action: str, data: Mapping[str, Any]) -> str | None:
        """Why the entry's officer block does not prove who made it; None when it does."""
        b = data.get(OFFICER)
        officer = officer_of(data)
        if b is None:
            return "it names no officer, and the inventory has an officer roster" if self else None
        if officer is None or not isinstance(b, Mapping):
            return "its officer block is malformed"
        via = b.get("via")
        if via == VIA_KEY:
            return self._key_problem(action, data, officer, b)
        if via == VIA_SSO:
            if self and self.by_subject(officer.subject) is None:
                return f"its officer {officer.subject} (signed in at the console) is not in the roster"
            return None
        if via == VIA_ACTOR:
            return "it was made at the CLI without an officer key, and the inventory has a roster" if self else None
        return f"its officer block says it was made via {via!r}"

    def _key_problem(self, action: str, data: Mapping[str, Any], officer: Officer,
                     b: Mapping[str, Any]) -> str | None:
        if not self:
            return None  # no roster: nothing is proven by key, four eyes are by subject only
        entry = self.by_id(officer.id or "")
        if entry is None:
            return f"it claims officer {officer.id!r}, who is not in the roster"
        if entry.officer.subject != officer.subject:
            return f"it claims officer {officer.id} with subject {officer.subject}, not the roster's"
        try:
            sig = base64.b64decode(str(b.get("signature", "")), validate=True)
        except (ValueError, binascii.Error):
            return "its officer signature is malformed"
        signed = payload(action, data, officer, str(b.get("at", "")))
        if entry.public_key is None:
            return f"officer {officer.id}'s public key cannot be read ({entry.unreadable})"
        if _verifies(entry.public_key, sig, signed):
            return None
        other = next((e for e in self.entries if e is not entry and e.public_key is not None
                      and _verifies(e.public_key, sig, signed)), None)
        if other is not None:
            return f"it claims officer {officer.id} but is signed with {other.officer.id}'s key"
        return f"its signature does not verify with officer {officer.id}'s key"


def load_roster(inventory: Inventory, inventory_path: Path, *, strict: bool = True) -> Roster:
    """The roster of ``inventory``, public keys read (relative paths from the inventory's folder).
    ``strict``: ``InputError`` (exit 2) when a key is missing or not an Ed25519 public key;
    otherwise that officer stays in the roster but proves nothing (an audit still runs)."""
    out = []
    for o in inventory.officers:
        path = Path(o.public_key)
        if not path.is_absolute():
            path = inventory_path.resolve().parent / path
        officer = Officer(o.subject, o.name, o.id)
        try:
            out.append(RosterEntry(officer, read_public_key(path, f"officer {o.id}")))
        except InputError as err:
            if strict:
                raise
            out.append(RosterEntry(officer, None, str(err)))
    return Roster(tuple(out))


def read_public_key(path: Path, what: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as err:
        raise InputError(f"{what}: cannot read the public key {path}: {err.strerror}") from err
    except ValueError as err:
        raise InputError(f"{what}: {path} is not a PEM public key") from err
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(f"{what}: {path} is not an Ed25519 public key")
    return key


def read_private_key(ref: str) -> Ed25519PrivateKey:
    """An officer's private key from ``file:PATH`` (PEM, unencrypted)."""
    scheme, _, rest = ref.partition(":")
    if scheme != "file" or not rest:
        raise InputError(f"--key {ref!r}: give file:PATH of the officer's Ed25519 private key (PEM)")
    try:
        key = serialization.load_pem_private_key(Path(rest).read_bytes(), password=None)
    except OSError as err:
        raise InputError(f"--key {ref}: cannot read {rest}: {err.strerror}") from err
    except (ValueError, TypeError) as err:
        raise InputError(f"--key {ref}: not an unencrypted PEM private key") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"--key {ref}: not an Ed25519 private key")
    return key


def key_officer(roster: Roster, officer_id: str, key: Ed25519PrivateKey) -> Officer:
    """The rostered officer ``officer_id``, checked to own ``key``; ``InputError`` otherwise."""
    entry = roster.by_id(officer_id)
    if entry is None:
        known = ", ".join(e.officer.id or "?" for e in roster.entries) or "none"
        raise InputError(f"--officer {officer_id!r}: not in the inventory's roster (officers: {known})")
    owner = roster.owner_of(key.public_key())
    if owner is not entry:
        whose = f"{owner.officer.id}'s" if owner is not None else "no rostered officer's"
        raise InputError(f"--key is {whose} key, not officer {officer_id}'s")
    return entry.officer


def _raw(k: Ed25519PublicKey) -> bytes:
    return k.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _verifies(key: Ed25519PublicKey, sig: bytes, data: bytes) -> bool:
    try:
        key.verify(sig, data)
    except InvalidSignature:
        return False
    return True
