"""What other components take from a verified log: its signed entries and its latest anchor.

Both verify the whole log first and raise ``VerificationError`` naming the problem when it is
not intact. Only entries that a signed checkpoint covers are returned: nothing unsigned is
ever evidence.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..errors import VerificationError
from .checkpoints import LogAnchor
from .format import CHECKPOINT, line_hash
from .verify import require_intact


def latest_anchor(path: Path, public_key: Ed25519PublicKey) -> LogAnchor | None:
    """The latest signed checkpoint of an intact log, or None when none is signed yet.

    Raises ``VerificationError`` when the log is not intact, ``OSError`` when it is unreadable.
    """
    report = require_intact(path, public_key)
    if report.last_checkpoint < 0:
        return None
    return LogAnchor(report.last_checkpoint + 1, report.last_checkpoint_hash)


def signed_entries(path: Path, public_key: Ed25519PublicKey) -> list[dict[str, Any]]:
    """The entries (checkpoints left out) that a signed checkpoint covers, in order.

    Raises ``VerificationError`` when the log is not intact, ``OSError`` when it is unreadable.
    """
    report = require_intact(path, public_key)
    count = report.last_checkpoint + 1
    out: list[dict[str, Any]] = []
    if count == 0:
        return out
    last = b""
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh):
            if n == count:
                break
            last = raw.rstrip(b"\n")
            entry = json.loads(last)
            if entry["event"] != CHECKPOINT:
                out.append(entry)
    if line_hash(last) != report.last_checkpoint_hash:  # replaced between verifying and reading
        raise VerificationError(f"{path}: the log changed while it was read; verify it again")
    return out
