"""Checkpoints: signed statements of the chain head, made by writers and checked by readers.

A checkpoint is an entry (``event`` ``checkpoint``, actor ``skydd``) whose ``data`` signs the
seq and line hash of the entry before it with the Ed25519 key of this Skydd home.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from estate.canonical import rfc3339

from ..errors import VerificationError
from ..signing import Signer, checkpoint_payload, sign_checkpoint, verify
from .format import CHECKPOINT, SYSTEM_ACTOR


def checkpoint_entry(signer: Signer, seq: int, prev: str, at: datetime) -> dict[str, Any]:
    """The checkpoint entry that follows the entry ``seq`` whose line hashes to ``prev``."""
    stamp = rfc3339(at)
    return {"seq": seq + 1, "at": stamp, "event": CHECKPOINT, "actor": SYSTEM_ACTOR,
            "data": sign_checkpoint(signer, seq, prev, stamp), "prev": prev}


def checkpoint_problem(entry: Mapping[str, Any], public_key: Ed25519PublicKey, trusted: str
                       ) -> str | None:
    """What is wrong with a checkpoint entry (None when it signs the entry before it with the
    trusted key), phrased to follow "checkpoint seq N"."""
    data = entry["data"]
    try:
        head, signer, signature = data["head"], data["key_id"], data["signature"]
        head_seq, head_hash = head["seq"], head["hash"]
    except (KeyError, TypeError):
        return "is malformed: it was changed"
    if entry["actor"] != SYSTEM_ACTOR:
        return f"has actor {entry['actor']!r}, not {SYSTEM_ACTOR!r}: it was changed"
    if head_seq != entry["seq"] - 1 or head_hash != entry["prev"]:
        return "does not sign the entry before it: it was changed"
    if signer != trusted:
        return f"is signed by {signer!s}, not by the trusted key {trusted}"
    try:
        verify(public_key, checkpoint_payload(head_seq, head_hash, str(entry["at"]), signer),
               str(signature))
    except VerificationError:
        return "has a signature that does not verify: forged or changed"
    return None


@dataclass(frozen=True)
class LogAnchor:
    """A signed state of the log: its first ``size`` lines, the last a checkpoint whose line
    hashes to ``head``. Signed reports embed one, so a later rollback of the log shows."""

    size: int
    head: str

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "head": self.head}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LogAnchor:
        """Raises ``ValueError`` naming what is wrong when ``data`` is not an anchor."""
        if not isinstance(data, Mapping) or set(data) != {"size", "head"}:
            raise ValueError("a log anchor is an object with exactly the keys 'size' and 'head'")
        size, head = data["size"], data["head"]
        if type(size) is not int or size < 1:
            raise ValueError(f"log anchor size {size!r}: must be a positive integer")
        if not isinstance(head, str) or not _is_hash(head):
            raise ValueError(f"log anchor head {head!r}: must be 'sha256:' and 64 hex digits")
        return cls(size, head)


def _is_hash(value: str) -> bool:
    digits = value.removeprefix("sha256:")
    return (value.startswith("sha256:") and len(digits) == 64
            and all(c in "0123456789abcdef" for c in digits))
