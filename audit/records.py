"""Signed records: what the verified audit log says, and what disagrees with it.

Waivers and attestations count only when the audit log holds them in entries that a signed
checkpoint covers. Their files under ``$SKYDD_HOME`` (``waivers.json``, ``attestations/``) are
copies for people and tools; anything in them that no signed entry vouches for is *tampering*:
it is ignored, and every audit names it in its output and in the signed report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .errors import VerificationError
from .log import signed_entries


@dataclass(frozen=True)
class Tampering:
    """One record that does not match the signed audit log, and why it was ignored."""

    kind: str  # "waiver", "attestation" or "log"
    id: str  # the waiver id, the attestation record path, or the log file
    problem: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "id": self.id, "problem": self.problem}

    def line(self) -> str:
        """One line for a terminal; control characters (from files an attacker may have written)
        are shown escaped."""
        text = f"tampering: {self.kind} {self.id}: {self.problem}"
        return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@dataclass(frozen=True)
class SignedLog:
    """The entries of the audit log that signed checkpoints cover, or why none can be trusted."""

    path: Path
    entries: tuple[Mapping[str, Any], ...] = ()
    problem: str | None = None  # set: the log does not verify, so no record in it counts

    def events(self, name: str) -> list[Mapping[str, Any]]:
        return [e for e in self.entries if e.get("event") == name]

    def tampering(self) -> list[Tampering]:
        if self.problem is None:
            return []
        return [Tampering("log", self.path.name,
                          f"{self.problem}; no waiver or attestation counts until it is resolved")]


def read_signed_log(path: Path, public_key: Ed25519PublicKey | None) -> SignedLog:
    """Verify the log with the home's key and keep its signed entries.

    A log that does not exist yet signs nothing (no entries, no problem). A log that does not
    verify, cannot be read, or a home without a key: no entries, and the problem says why.
    """
    if public_key is None:
        if not path.exists():
            return SignedLog(path)
        return SignedLog(path, (), "this Skydd home has no signing key to verify the audit log with")
    try:
        entries = signed_entries(path, public_key)
    except FileNotFoundError:
        return SignedLog(path)
    except OSError as err:
        return SignedLog(path, (), f"the audit log {path} cannot be read ({err.strerror})")
    except VerificationError as err:
        return SignedLog(path, (), f"the audit log does not verify ({err})")
    return SignedLog(path, tuple(entries))
