"""The audit trail of the access decision: every deny is appended to the hash-chained audit log
with its reasons and the token's digest, never the token. Allows are not logged."""

from __future__ import annotations

import logging
from pathlib import Path

from audit.log import AuditLog
from audit.signing import load_signer
from identity.decision import Decision

log = logging.getLogger(__name__)


class DenyLog:
    """One long-lived writer per process: concurrent denies are group-committed (one fdatasync
    per batch); a checkpoint is signed every 1,000 entries and when the service closes it."""

    EVENT = "access.deny"
    ACTOR = "skydd.decision"

    def __init__(self, home: Path) -> None:
        self._log = AuditLog(home / "audit.log", load_signer(home))

    def record(self, decision: Decision) -> None:
        """Append ``decision`` if it is a deny. The deny stands even when the log cannot be
        written: the failure is logged, never turned into an allow."""
        if decision.allow:
            return
        data = {"user": decision.user, "hsa_id": decision.hsa_id, "token": decision.token,
                "reasons": [r.to_dict() for r in decision.reasons]}
        try:
            self._log.append(self.EVENT, self.ACTOR, data, at=decision.at)
        except Exception as err:
            log.error("could not append the deny to the audit log: %s", err)

    def close(self) -> None:
        """Seal the log with a signed checkpoint when the service stops."""
        self._log.close()
