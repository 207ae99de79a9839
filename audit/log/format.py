"""The entries of the audit log as lines: their keys, their canonical bytes, their chain hash.

One entry per line, canonical JSON with the keys ``seq``, ``at``, ``event``, ``actor``, ``data``
and ``prev``, where ``prev`` is the SHA-256 of the previous line's bytes (``GENESIS`` for the
first).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from estate.canonical import canonical_json

from ..errors import AuditError

GENESIS = "sha256:" + "0" * 64
CHECKPOINT = "checkpoint"
RECOVERED = "log.recovered"
ACCEPTED = "log.accepted"
RESERVED_EVENTS = frozenset({CHECKPOINT, RECOVERED, ACCEPTED})
SYSTEM_ACTOR = "skydd"
CHECKPOINT_EVERY = 1000
ENTRY_KEYS = frozenset({"seq", "at", "event", "actor", "data", "prev"})
CHUNK = 1 << 22  # bytes read at once when scanning the file (tests make it small)

Item = tuple[str, str, Mapping[str, Any]]
Pending = tuple[str, str, Mapping[str, Any], datetime | None]


class LogWriteError(AuditError):
    """The audit log could not be appended to (disk, permissions, or a damaged tail)."""


def line_hash(line: bytes) -> str:
    """The chain hash of one line (its bytes without the newline)."""
    return "sha256:" + hashlib.sha256(line).hexdigest()


_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                           default=lambda v: json.loads(canonical_json(v))).encode
_string = json.encoder.encode_basestring  # what the encoder above does for a str (C-accelerated)


def entry_line(entry: Mapping[str, Any]) -> bytes:
    """``canonical_json(entry)`` for the six entry keys, without re-sorting the top level."""
    return (f'{{"actor":{_string(entry["actor"])},"at":{_string(entry["at"])},'
            f'"data":{_encode(entry["data"])},"event":{_string(entry["event"])},'
            f'"prev":"{entry["prev"]}","seq":{entry["seq"]}}}').encode()


def pending_item(event: str, actor: str, data: Mapping[str, Any], at: datetime | None) -> Pending:
    """An entry a caller asks for, checked before it is queued."""
    if not isinstance(event, str) or not event or event in RESERVED_EVENTS:
        raise ValueError(f"event {event!r}: must be a non-empty name other than "
                         f"{', '.join(sorted(RESERVED_EVENTS))}")
    if not isinstance(actor, str) or not actor:
        raise ValueError("actor must be a non-empty string")
    if type(data) is not dict and not isinstance(data, Mapping):
        raise ValueError("data must be a mapping")
    return event, actor, data, at

