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
from typing import Any, NamedTuple

from estate.canonical import canonical_json, rfc3339

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


class Pending(NamedTuple):
    """An entry a caller asked for, checked and encoded before it is queued: the writer only
    adds ``at`` (when the caller gave none), ``prev`` and ``seq`` under its lock."""

    event: str
    actor: str
    data: Mapping[str, Any]
    at: str | None  # RFC 3339, or None for the commit's own clock reading
    head: str  # '{"actor":…,"at":'
    body: str  # ',"data":…,"event":…,"prev":"'

    def line(self, seq: int, at: str, prev: str) -> bytes:
        """``entry_line`` of this entry at ``seq`` after the line hashing to ``prev``."""
        return f'{self.head}"{at}"{self.body}{prev}","seq":{seq}}}'.encode()


class LogWriteError(AuditError):
    """The audit log could not be appended to (disk, permissions, or a damaged tail)."""


def line_hash(line: bytes) -> str:
    """The chain hash of one line (its bytes without the newline)."""
    return "sha256:" + hashlib.sha256(line).hexdigest()


_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                           default=lambda v: json.loads(canonical_json(v))).encode
_string = json.encoder.encode_basestring  # what the encoder above does for a str (C-accelerated)
# The C encoder behind ``_encode``, made once rather than per call (``JSONEncoder.encode`` builds
# it every time): same separators, sorting and ``default``; no ``markers``, so a value that
# contains itself raises ``RecursionError`` instead of ``ValueError``.
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_c_encoder = _c_make_encoder and _c_make_encoder(
    None, lambda v: json.loads(canonical_json(v)), _string, None, ":", ",", True, False, True)


def encode_data(data: Any) -> str:
    """``_encode(data)``: the canonical JSON text of an entry's ``data``."""
    if _c_encoder is None:
        return _encode(data)
    return "".join(_c_encoder(data, 0))


def entry_line(entry: Mapping[str, Any]) -> bytes:
    """``canonical_json(entry)`` for the six entry keys, without re-sorting the top level."""
    return (f'{{"actor":{_string(entry["actor"])},"at":{_string(entry["at"])},'
            f'"data":{encode_data(entry["data"])},"event":{_string(entry["event"])},'
            f'"prev":"{entry["prev"]}","seq":{entry["seq"]}}}').encode()


def pending_item(event: str, actor: str, data: Mapping[str, Any], at: datetime | None) -> Pending:
    """An entry a caller asks for, checked and encoded before it is queued (in the caller's
    thread, outside the writer's lock). Raises ``LogWriteError`` for data that is not JSON or a
    naive time, ``ValueError`` for a reserved event or an empty actor."""
    if not isinstance(event, str) or not event or event in RESERVED_EVENTS:
        raise ValueError(f"event {event!r}: must be a non-empty name other than "
                         f"{', '.join(sorted(RESERVED_EVENTS))}")
    if not isinstance(actor, str) or not actor:
        raise ValueError("actor must be a non-empty string")
    if type(data) is not dict and not isinstance(data, Mapping):
        raise ValueError("data must be a mapping")
    try:
        stamp = rfc3339(at) if at is not None else None
        body = f',"data":{encode_data(data)},"event":{_string(event)},"prev":"'
    except (TypeError, ValueError, RecursionError) as err:  # not JSON-able, naive time
        raise LogWriteError(f"audit log entry refused: {err}") from err
    return Pending(event, actor, data, stamp, f'{{"actor":{_string(actor)},"at":', body)

