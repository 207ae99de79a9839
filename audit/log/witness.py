"""The witness: a copy of the log's signed checkpoints kept outside ``$SKYDD_HOME`` (ADR 0008).

The history database (``SKYDD_HISTORY_URL``, e.g. PostgreSQL on another host) keeps, per signing
key, a chain of the log's signed checkpoints: size (lines), head (the checkpoint line's hash),
the byte offset where it ends, what it signs, the signature, key id and time. Like a C2SP
``tlog-witness`` cosigner it records a checkpoint only when it *extends* the latest one it holds:
the log must still hold that checkpoint's line, unchanged, at the same place, and every line
after it must chain from it up to the new checkpoint, whose signature must verify. A log cut
back (rollback), rewritten after the witnessed state (fork) or deleted is refused, and the
refusal names the witnessed size and head. ``skydd log verify`` then proves the log still
contains the witness's latest checkpoint (it is an anchor, like a report's). A log restored
behind the witness (a backup put back after a disk failure) stays refused until an operator
with the log's key resets the witness (``reset``): a signed, permanent record that starts a new
chain, which ``skydd log verify`` names every time.

Only reads the log, under the shared ``flock`` while it takes the size: recording in the witness
can never change or lock out the log. The witness only runs when a history store is configured
outside ``$SKYDD_HOME``; one inside it is in the attacker's reach and is not a witness.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from estate.canonical import canonical_json, rfc3339
from estate.settings import Settings

from ..errors import AuditError, VerificationError
from ..signing import Signer, key_id, verify
from .checkpoints import LogAnchor, checkpoint_problem
from .format import CHECKPOINT, ENTRY_KEYS, GENESIS, line_hash
from .verify import Problem, _fast_fields, _read_lines

if TYPE_CHECKING:
    from ..history import History

logger = logging.getLogger(__name__)
Warn = Callable[[str], None]
_ATTEMPTS = 10  # a conflict means another writer recorded first: read again, at most this often
_BACK = 8192  # bytes read before the witnessed end to find its checkpoint line


class WitnessError(AuditError):
    """The witness could not be used: not configured, unreachable, or it kept moving."""


class WitnessRefused(WitnessError):
    """The log is not consistent with the witness's latest checkpoint: rollback or fork."""

    def __init__(self, kind: Problem, message: str) -> None:
        self.kind = kind
        super().__init__(message)


@dataclass(frozen=True)
class Witnessed:
    """A checkpoint as the witness holds it."""

    size: int  # lines up to and including the checkpoint
    head: str  # the checkpoint line's hash
    end: int  # the file offset just after it
    at: str  # the checkpoint's own time (RFC 3339, as signed)
    recorded_at: datetime  # when the witness recorded it

    @property
    def anchor(self) -> LogAnchor:
        return LogAnchor(self.size, self.head)

    def describe(self) -> str:
        return f"size {self.size} (line {self.size} hashing to {self.head}, signed {self.at})"

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Witnessed:
        return cls(int(row["size"]), str(row["head"]), int(row["end_byte"]), str(row["at"]),
                   row["recorded_at"])


def witness_url(home: Path) -> tuple[str | None, str]:
    """The history store that witnesses the log of ``home``: ``(url, "")``, or ``(None, why
    not)`` when none is configured outside ``$SKYDD_HOME``."""
    home = Path(home).resolve()
    url = Settings(home=home).history_url
    if url == f"sqlite:///{home / 'history.db'}":
        return None, ("no history store is configured outside $SKYDD_HOME (set SKYDD_HISTORY_URL, "
                      "e.g. to PostgreSQL on another host)")
    if url.startswith("sqlite:///"):
        db = Path(url.removeprefix("sqlite:///").split("?", 1)[0]).resolve()
        if db.is_relative_to(home):
            return None, (f"the history store {db} is inside $SKYDD_HOME ({home}): whoever can "
                          "cut the log can cut it too, so it is not a witness")
    return url, ""


@dataclass(frozen=True)
class Reset:
    """A reset of the witness, signed by the log's key: the witness held ``from_size`` lines
    ending in ``from_head``, and the operator ``actor`` said why it starts over (``reason``)."""

    epoch: int
    from_size: int
    from_head: str
    actor: str
    reason: str
    at: str

    def describe(self) -> str:
        return (f"reset {self.epoch} by {self.actor} at {self.at}: {self.reason!r} (the witness "
                f"held size {self.from_size}, line {self.from_size} hashing to {self.from_head})")


def _reset_payload(row: dict[str, Any]) -> bytes:
    return canonical_json({k: row[k] for k in ("origin", "epoch", "from_size", "from_head",
                                                "actor", "reason", "at")})


def resets(history: History, public_key: Ed25519PublicKey) -> list[Reset]:
    """The witness's resets of the log signed by ``public_key``, oldest first. ``WitnessError``
    when one is not signed by that key or the epochs are not 1, 2, …: the witness store itself
    was tampered with, and nothing it holds is trusted."""
    out = []
    for n, row in enumerate(history.witness_resets(key_id(public_key)), 1):
        try:
            if row["epoch"] != n:
                raise VerificationError(f"epoch {row['epoch']} where {n} was due")
            verify(public_key, _reset_payload(row), row["signature"])
        except VerificationError as err:
            raise WitnessError(f"the witness's reset {row['epoch']} is not one the log's key "
                               f"signed ({err}): the witness store was tampered with") from err
        out.append(Reset(n, int(row["from_size"]), str(row["from_head"]), str(row["actor"]),
                         str(row["reason"]), str(row["at"])))
    return out


def _origin(history: History, public_key: Ed25519PublicKey) -> str:
    """The chain the witness keeps now: the key id, ``key_id/N`` after its N-th reset."""
    n = len(resets(history, public_key))
    return key_id(public_key) + (f"/{n}" if n else "")


def latest(history: History, public_key: Ed25519PublicKey) -> Witnessed | None:
    """The witness's latest checkpoint of the log signed by ``public_key``, or None."""
    row = history.witnessed(_origin(history, public_key))
    return None if row is None else Witnessed.from_row(row)


def reset(path: Path, signer: Signer, history: History, actor: str, reason: str, *,
          clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Reset:
    """Start the witness over for a log restored behind it (a disk restored from a backup):
    only when the witness refuses the log as it is now, and signed with the log's key, so
    whoever can write ``$SKYDD_HOME`` or the store but lacks the key cannot make a cut log
    acceptable. The reset is kept for ever and ``skydd log verify`` names it. The caller proves
    the log intact on its own first and then writes the reset into the log, which the witness
    then records from the start. ``WitnessError`` when there is nothing to reset."""
    from ..history import WitnessConflict

    held = latest(history, signer.public_key)
    if held is None:
        raise WitnessError("the witness holds no checkpoint of this log: nothing to reset")
    try:
        _, stop = extension(path, signer.public_key, held)
    except WitnessRefused:
        pass
    else:
        if stop is None:
            raise WitnessError(f"the witness accepts the log as it is (it holds "
                               f"{held.describe()}): nothing to reset")
    row: dict[str, Any] = {"origin": key_id(signer.public_key),
                           "epoch": len(resets(history, signer.public_key)) + 1,
                           "from_size": held.size, "from_head": held.head, "actor": actor,
                           "reason": reason, "at": rfc3339(clock())}
    row["signature"] = signer.sign(_reset_payload(row))
    try:
        history.reset_witness(row)
    except WitnessConflict as err:
        raise WitnessError(f"{err}; look again with 'skydd log witness'") from err
    return Reset(row["epoch"], held.size, held.head, actor, reason, row["at"])


def observe(path: Path, public_key: Ed25519PublicKey, history: History, *,
            clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Witnessed | None:
    """Record the log's latest signed checkpoint in the witness when it extends the witness's
    latest one; returns what the witness holds afterwards (None: nothing signed yet).

    Raises ``WitnessRefused`` (rollback or fork, naming the witnessed size and head),
    ``WitnessError`` or ``HistoryError`` when the witness cannot be used, ``OSError`` when the
    log cannot be read.
    """
    from ..history import WitnessConflict

    origin = _origin(history, public_key)
    target = 0  # the size this call set out to record: once the witness holds it, done
    for attempt in range(_ATTEMPTS):
        held = latest(history, public_key)
        new, stop = extension(path, public_key, held)  # proves the log still holds the witnessed
        if new is None or (held is not None and 0 < target <= held.size):
            if stop is not None:
                raise WitnessRefused(Problem.CHANGED, _stopped(path, held, stop))
            return held  # nothing new, or another writer already recorded a state covering ours
        target = target or new["size"]
        row = {**new, "origin": origin, "previous": held.size if held else 0,
               "recorded_at": clock()}
        try:
            history.witness(row)
        except WitnessConflict:
            time.sleep(random.uniform(0, 0.01 * (attempt + 1)))
            continue  # another writer recorded first: check against what it recorded
        if stop is not None:
            raise WitnessRefused(Problem.CHANGED, _stopped(path, Witnessed.from_row(row), stop))
        return Witnessed.from_row(row)
    raise WitnessError(f"the witness kept moving: {_ATTEMPTS} attempts to record a checkpoint "
                       "of the log each found another writer had recorded one first")


def extension(path: Path, public_key: Ed25519PublicKey, held: Witnessed | None
              ) -> tuple[dict[str, Any] | None, str | None]:
    """The latest signed checkpoint of the log that extends ``held`` (the columns the witness
    keeps; None when there is none beyond it), and why the proof stopped before the end of the
    log (None when it did not: entries after the last checkpoint and a torn last line are not
    a reason). ``WitnessRefused`` when the log no longer contains ``held`` (rollback) or
    differs from it right after it (fork)."""
    trusted = key_id(public_key)
    if not path.exists():
        if held is not None:
            raise WitnessRefused(Problem.ROLLBACK, f"{path} is gone, but the witness holds its "
                                 f"checkpoint {held.describe()}: the log was deleted")
        return None, None
    with open(path, "rb") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_SH)  # a consistent prefix: no half-written batch
        size = os.fstat(fh.fileno()).st_size
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        if held is None:
            start, seq, prev = 0, -1, GENESIS
        else:
            start, seq, prev = held.end, held.size - 1, held.head
            _still_holds(fh, size, held, path)
        fh.seek(start)
        best: dict[str, Any] | None = None
        stop: str | None = None
        offset, lineno = start, seq + 1
        for line, complete in _read_lines(fh, size - start, None):
            if not complete:
                break  # a torn last line: the next writer recovers it
            offset, lineno = offset + len(line) + 1, lineno + 1
            fields = _fast_fields(line)
            entry = None
            if fields is None:
                entry = _entry(line)
                fields = (entry["seq"], entry["prev"]) if entry is not None else None
            if fields is None or fields != (seq + 1, prev):
                if held is not None and seq == held.size - 1:
                    raise WitnessRefused(Problem.FORKED, f"line {held.size + 1} of {path} does "
                                         f"not continue from the witness's checkpoint "
                                         f"{held.describe()}: the log was rewritten after it")
                stop = f"line {lineno} does not chain from the line before it"
                break
            seq, prev = seq + 1, line_hash(line)
            if seq == 0 and (entry is None or entry["event"] != CHECKPOINT):
                stop = "the log does not start with a signed genesis checkpoint"
                break
            if entry is not None and entry["event"] == CHECKPOINT:
                bad = checkpoint_problem(entry, public_key, trusted)
                if bad is not None:
                    stop = f"the checkpoint on line {lineno} {bad}"
                    break
                data = entry["data"]
                best = {"size": seq + 1, "head": prev, "end_byte": offset,
                        "signed_seq": data["head"]["seq"], "signed_hash": data["head"]["hash"],
                        "signature": data["signature"], "key_id": data["key_id"],
                        "at": entry["at"]}
    return best, stop


def _stopped(path: Path, held: Witnessed | None, stop: str) -> str:
    upto = f"up to its checkpoint {held.describe()}" if held else "nothing of it"
    return (f"{path}: {stop}, so nothing after it is witnessed (it holds {upto}); the log was "
            "changed there")


def _still_holds(fh: Any, size: int, held: Witnessed, path: Path) -> None:
    """The witnessed checkpoint line must still end at ``held.end`` and hash to ``held.head``."""
    if size < held.end:
        raise WitnessRefused(Problem.ROLLBACK, f"{path} holds {size} bytes, but the witness's "
                             f"checkpoint {held.describe()} ends at byte {held.end}: entries "
                             "were cut off the end (rollback)")
    back = min(held.end, _BACK)
    fh.seek(held.end - back)
    chunk = fh.read(back)
    line = chunk[:-1].rsplit(b"\n", 1)[-1] if chunk.endswith(b"\n") else b""
    if not line or line_hash(line) != held.head:
        raise WitnessRefused(Problem.FORKED, f"{path} no longer holds the witness's checkpoint "
                             f"{held.describe()} where it was: the log was rewritten or replaced "
                             "after the witness recorded it (fork)")


def _entry(line: bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if type(entry) is not dict or entry.keys() != ENTRY_KEYS or type(entry["seq"]) is not int:
        return None
    return entry


def record(path: Path, public_key: Ed25519PublicKey, url: str | None,
           warn: Warn | None = None) -> Witnessed | None:
    """After a write: record the log's latest checkpoint in the witness at ``url`` (None: the
    one configured for the log's home, if any). Never raises: the log entry is already durable
    and stays; a witness that is unreachable or refuses is reported through ``warn`` (default: a
    logged warning, shown on stderr) and the next write catches up."""
    from ..history import History, HistoryError

    if url is None:
        url, _ = witness_url(path.parent)
        if url is None:
            return None
    say = warn or logger.warning
    try:
        with History(url) as history:
            return observe(path, public_key, history)
    except WitnessRefused as err:
        say(f"witness refused the log's checkpoint: {err}; run 'skydd log verify'")
    except (WitnessError, HistoryError) as err:
        say(f"the entry is in the audit log but not witnessed: {err}")
    except OSError as err:
        say(f"the entry is in the audit log but not witnessed: cannot read {path}: {err.strerror}")
    except Exception as err:  # the entry is durable: whatever the witness does, never fail the write
        say(f"the entry is in the audit log but not witnessed: {type(err).__name__}: {err}")
    return None
