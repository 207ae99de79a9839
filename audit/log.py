"""The hash-chained audit log at ``$SKYDD_HOME/audit.log`` (interim: chain and lock only).

Each line is one JSON entry holding the SHA-256 of the previous line, so a changed, removed or
reordered entry breaks the chain.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from policies import canonical_json, rfc3339

from .signing import Signer

GENESIS = "sha256:" + "0" * 64


def append(path: Path, signer: Signer, event: str, actor: str, data: dict[str, Any],
           *, at: datetime | None = None) -> dict[str, Any]:
    """Append one durable entry; safe with concurrent writers (an exclusive lock)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        prev, seq = GENESIS, 0
        size = os.fstat(fd).st_size
        if size:
            tail = os.pread(fd, min(size, 1 << 20), max(0, size - (1 << 20))).splitlines()
            last = tail[-1]
            prev = "sha256:" + hashlib.sha256(last).hexdigest()
            seq = json.loads(last)["seq"] + 1
        entry = {"seq": seq, "at": rfc3339(at or datetime.now(UTC)), "event": event,
                 "actor": actor, "data": data, "prev": prev}
        os.write(fd, canonical_json(entry) + b"\n")
        os.fsync(fd)
        return entry
    finally:
        os.close(fd)
