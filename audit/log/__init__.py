"""The hash-chained audit log at ``$SKYDD_HOME/audit.log``.

One entry per line, canonical JSON with the keys ``seq``, ``at``, ``event``, ``actor``, ``data``
and ``prev``, where ``prev`` is the SHA-256 of the previous line's bytes (``GENESIS`` for the
first). A changed, removed or reordered entry breaks the chain. A ``checkpoint`` entry signs the
chain head with Ed25519: the first line of a log (genesis), the end of every commit, and at least
every ``CHECKPOINT_EVERY`` entries inside one. A writer never signs over entries it did not
write (``UnsignedTailError``); ``LogAnchor`` from signed reports detects rollback, and so does
the witness: a copy of the signed checkpoints in the history database, outside ``$SKYDD_HOME``.

One job per module: ``format`` (entries as lines, hashes), ``tail`` (the writer's view of the
end of the log, torn-tail recovery), ``writer`` (``AuditLog``: pipelined group commit,
``flock``), ``commit`` (its bookkeeping, ``CommitStats``), ``checkpoints`` (signed heads,
``LogAnchor``), ``verify`` (``verify_log``, ``LogReport``, ``require_intact``), ``anchors``
(``signed_entries``, ``latest_anchor``) and ``witness`` (``Witnessed``, ``witness_url``,
``observe``: record a checkpoint only when it extends the witnessed one).
See docs/adr/0002-audit-log.md and docs/adr/0008-append-only-log.md.
"""

from __future__ import annotations

from ..signing import checkpoint_payload
from .anchors import latest_anchor, signed_entries
from .checkpoints import LogAnchor
from .commit import CommitStats
from .format import (
    ACCEPTED,
    CHECKPOINT,
    CHECKPOINT_EVERY,
    ENTRY_KEYS,
    GENESIS,
    RECOVERED,
    RESERVED_EVENTS,
    SYSTEM_ACTOR,
    Item,
    LogWriteError,
    line_hash,
)
from .tail import UnsignedTailError
from .verify import LogProblem, LogReport, Problem, Progress, require_intact, verify_log
from .witness import Witnessed, WitnessError, WitnessRefused, witness_url
from .writer import AuditLog, Clock, accept_unsigned, append

__all__ = [
    "ACCEPTED", "CHECKPOINT", "CHECKPOINT_EVERY", "ENTRY_KEYS", "GENESIS", "RECOVERED",
    "RESERVED_EVENTS", "SYSTEM_ACTOR", "AuditLog", "Clock", "CommitStats", "Item", "LogAnchor", "LogProblem",
    "LogReport", "LogWriteError", "Problem", "Progress", "UnsignedTailError", "WitnessError",
    "WitnessRefused", "Witnessed", "accept_unsigned", "append", "checkpoint_payload",
    "latest_anchor", "line_hash", "require_intact", "signed_entries", "verify_log", "witness_url",
]
