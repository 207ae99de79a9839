"""Verifying the log: the chain, every checkpoint signature; the first bad entry named.

``verify_log`` returns a ``LogReport`` naming the first bad entry; ``require_intact`` is the
raising gate built on it. An intact log starts with a signed genesis checkpoint and ends with a
signed checkpoint (ADR 0008): entries no checkpoint covers are a problem, not a note. Anchors
(``LogAnchor`` from signed reports) prove the log still holds a state signed earlier: a shorter
log is a rollback, a different line there a fork. It reads in large chunks and takes a fast path for plain entries:
their ``seq`` and ``prev`` are read from the line's fixed tail without parsing the JSON.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..errors import VerificationError
from ..signing import key_id
from . import format as fmt
from .checkpoints import LogAnchor, checkpoint_problem
from .format import ACCEPTED, CHECKPOINT, ENTRY_KEYS, GENESIS, RECOVERED


class Problem(str, Enum):
    """What broke the log, as the first bad entry shows it."""

    CHANGED = "changed"
    REMOVED = "removed"
    REORDERED = "reordered"
    TORN = "torn"
    SIGNATURE = "signature"
    UNSIGNED = "unsigned"  # no signed genesis at the start, or entries after the last checkpoint
    ROLLBACK = "rollback"  # shorter than an anchor: entries were cut off the end
    FORKED = "forked"  # an anchor's line hashes differently: the log was rewritten since


@dataclass(frozen=True)
class LogProblem:
    kind: Problem
    line: int  # 1-based line of the first bad entry
    seq: int | None  # its seq, when known
    message: str


@dataclass(frozen=True)
class LogReport:
    """What ``verify_log`` found. ``problem`` is None when the log is intact."""

    path: str
    entries: int  # entries whose chain verified (checkpoints included)
    checkpoints: int  # checkpoint signatures verified
    head_seq: int  # the last verified entry's seq, -1 for an empty log
    head_hash: str
    last_checkpoint: int  # seq of the last verified checkpoint, -1 when none
    recoveries: tuple[int, ...]  # seqs of ``log.recovered`` entries (torn tails cut by a writer)
    problem: LogProblem | None
    last_checkpoint_hash: str = GENESIS  # the line hash of the last verified checkpoint
    accepted: tuple[int, ...] = ()  # seqs of ``log.accepted`` entries (unsigned tails signed over)
    anchors: tuple[LogAnchor, ...] = ()  # anchors the log was proven to still contain

    @property
    def intact(self) -> bool:
        return self.problem is None

    @property
    def unsigned(self) -> int:
        """Entries after the last checkpoint: chained, not signed (a problem since ADR 0008)."""
        return self.head_seq - self.last_checkpoint


Progress = Callable[[int, int], None]  # (bytes read, bytes in all)


def _read_lines(fh: Any, size: int, progress: Progress | None) -> Iterator[tuple[bytes, bool]]:
    """(line without newline, complete) for the first ``size`` bytes."""
    rest = b""
    left = size
    while left > 0:
        chunk = fh.read(min(fmt.CHUNK, left))
        if not chunk:
            break
        left -= len(chunk)
        if progress is not None:
            progress(size - left, size)
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        for line in lines:
            yield line, True
    if rest:
        yield rest, False


class _Peek:
    def __init__(self, it: Iterator[tuple[bytes, bool]]) -> None:
        self._it = it
        self._next: tuple[bytes, bool] | None = None

    def __iter__(self) -> _Peek:
        return self

    def __next__(self) -> tuple[bytes, bool]:
        if self._next is not None:
            item, self._next = self._next, None
            return item
        return next(self._it)

    def peek(self) -> dict[str, Any] | None:
        """The next line as an entry, or None when there is none or it is not an entry."""
        if self._next is None:
            self._next = next(self._it, None)
        if self._next is None or not self._next[1]:
            return None
        try:
            entry = json.loads(self._next[0])
        except ValueError:
            return None
        return entry if isinstance(entry, dict) else None


def verify_log(path: Path, public_key: Ed25519PublicKey, *, anchors: Sequence[LogAnchor] = (),
               progress: Progress | None = None) -> LogReport:
    """Check the chain, every checkpoint signature and each anchor; name the first problem.

    Raises ``OSError`` when the file cannot be read. Reads a consistent prefix: the size is taken
    under a shared lock, so entries another process is appending are not seen half-written.
    """
    trusted = key_id(public_key)
    with open(path, "rb") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
        size = os.fstat(fh.fileno()).st_size
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        lines = _Peek(_read_lines(fh, size, progress))
        state = _Verifier(public_key, trusted, anchors)
        problem = state.run(lines)
    return LogReport(str(path), state.seq + 1, state.checkpoints, state.seq, state.prev,
                     state.last_checkpoint, tuple(state.recoveries), problem,
                     state.last_checkpoint_hash, tuple(state.accepted),
                     tuple(state.proven) if problem is None else ())


class _Verifier:
    def __init__(self, public_key: Ed25519PublicKey, trusted: str,
                 anchors: Sequence[LogAnchor]) -> None:
        self.public_key, self.trusted = public_key, trusted
        self.seq, self.prev = -1, GENESIS
        self.checkpoints, self.last_checkpoint = 0, -1
        self.last_checkpoint_hash = GENESIS
        self.recoveries: list[int] = []
        self.accepted: list[int] = []
        self.anchors: dict[int, list[LogAnchor]] = {}
        for anchor in anchors:
            self.anchors.setdefault(anchor.size, []).append(anchor)
        self.proven: list[LogAnchor] = []

    def run(self, lines: _Peek) -> LogProblem | None:
        sha256 = hashlib.sha256
        lineno = 0
        unparsed: tuple[bytes, str] | None = None  # the last line, when read by the fast path
        before = b""
        for line, complete in lines:
            lineno += 1
            want = self.seq + 1
            if not complete:
                return LogProblem(Problem.TORN, lineno, None,
                                  f"line {lineno}: torn last line ({len(line)} bytes without a "
                                  f"newline): an append was interrupted; the chain is intact "
                                  f"through seq {self.seq}")
            fields = _fast_fields(line) if lineno > 1 else None  # the genesis is read in full
            entry: dict[str, Any] | None = None
            if fields is None:
                parsed = _parse_entry(line, lineno, want)
                if isinstance(parsed, LogProblem):
                    return parsed
                entry = parsed
                seq, prev = entry["seq"], entry["prev"]
                unparsed = None
            else:
                seq, prev = fields
                unparsed = (line, prev)
            if seq != want:
                return self._out_of_order(lineno, seq, want, lines.peek())
            digest = "sha256:" + sha256(line).hexdigest()
            if prev != self.prev:
                return self._broken_link(lineno, seq, digest, lines.peek(), before)
            if entry is not None:
                event = entry["event"]
                if event == CHECKPOINT:
                    bad = self._checkpoint(entry)
                    if bad:
                        return LogProblem(Problem.SIGNATURE, lineno, seq,
                                          f"line {lineno}: checkpoint seq {seq} {bad}")
                    self.last_checkpoint_hash = digest
                elif event == RECOVERED:
                    self.recoveries.append(seq)
                elif event == ACCEPTED:
                    self.accepted.append(seq)
                if lineno == 1 and event != CHECKPOINT:
                    return LogProblem(Problem.UNSIGNED, 1, seq,
                                      "line 1 (seq 0): the log does not start with a signed "
                                      "genesis checkpoint: its start was rewritten (or it was "
                                      "written before ADR 0008)")
            if lineno in self.anchors:
                fork = self._anchor(lineno, digest)
                if fork is not None:
                    return fork
            self.seq, self.prev, before = seq, digest, line
        if unparsed is not None:
            # No later line vouches for the last one through its hash: read it in full.
            line, prev = unparsed
            parsed = _parse_entry(line, lineno, self.seq)
            if isinstance(parsed, LogProblem):
                return parsed
            if parsed["seq"] != self.seq or parsed["prev"] != prev:
                return LogProblem(Problem.CHANGED, lineno, self.seq,
                                  f"line {lineno} (seq {self.seq}): not a log entry: it was changed")
        if self.seq > self.last_checkpoint:
            first, count = self.last_checkpoint + 1, self.seq - self.last_checkpoint
            what = f"seq {first}" if count == 1 else f"seq {first}–{self.seq}"
            return LogProblem(Problem.UNSIGNED, first + 1, first,
                              f"line {first + 1}: {what} ({count} "
                              f"entr{'y' if count == 1 else 'ies'}) after the last signed "
                              "checkpoint are not signed: appended without the signing key, or "
                              "left by a writer that crashed ('skydd log seal --accept-unsigned' "
                              "after review)")
        beyond = [a for size, got in self.anchors.items() if size > lineno for a in got]
        if beyond:
            a = max(beyond, key=lambda a: a.size)
            return LogProblem(Problem.ROLLBACK, lineno, self.seq,
                              f"the log ends at line {lineno}, but an anchor shows it held "
                              f"{a.size} lines with line {a.size} hashing to {a.head}: entries "
                              "were cut off the end (rollback)")
        return None

    def _anchor(self, lineno: int, digest: str) -> LogProblem | None:
        for anchor in self.anchors[lineno]:
            if anchor.head != digest:
                return LogProblem(Problem.FORKED, lineno, self.seq + 1,
                                  f"line {lineno} hashes to {digest}, but an anchor recorded "
                                  f"{anchor.head} there: the log was rewritten after that state "
                                  "was signed (fork)")
            self.proven.append(anchor)
        return None

    def _out_of_order(self, lineno: int, seq: int, want: int, nxt: dict[str, Any] | None
                      ) -> LogProblem:
        if seq > want and nxt is not None and nxt.get("seq") == want:
            return LogProblem(Problem.REORDERED, lineno, seq,
                              f"line {lineno}: seq {seq} comes before seq {want}: entries were reordered")
        if seq > want:
            gone = f"seq {want}" if seq == want + 1 else f"seq {want}–{seq - 1}"
            return LogProblem(Problem.REMOVED, lineno, want,
                              f"line {lineno}: {gone} removed (the line holds seq {seq})")
        return LogProblem(Problem.REORDERED, lineno, seq,
                          f"line {lineno}: seq {seq} follows seq {want - 1}: entries were "
                          "reordered or duplicated")

    def _broken_link(self, lineno: int, seq: int, digest: str, nxt: dict[str, Any] | None,
                     before: bytes) -> LogProblem:
        if seq == 0:
            return LogProblem(Problem.CHANGED, lineno, 0,
                              f"line {lineno} (seq 0): prev is not the genesis hash: the entry was changed")
        if nxt is not None and nxt.get("prev") != digest:
            # this line's own hash no longer links either: the line itself was changed
            return LogProblem(Problem.CHANGED, lineno, seq,
                              f"line {lineno} (seq {seq}) was changed: it no longer links to "
                              f"seq {seq - 1} nor to seq {seq + 1}")
        parsed = _parse_entry(before, lineno - 1, seq - 1)
        if isinstance(parsed, LogProblem):  # the fast path let it by; say what is wrong with it
            return parsed
        return LogProblem(Problem.CHANGED, lineno - 1, seq - 1,
                          f"line {lineno - 1} (seq {seq - 1}) was changed: its hash no longer "
                          f"matches the prev recorded by seq {seq}")

    def _checkpoint(self, entry: dict[str, Any]) -> str | None:
        bad = checkpoint_problem(entry, self.public_key, self.trusted)
        if bad is None:
            self.checkpoints += 1
            self.last_checkpoint = entry["seq"]
        return bad


_FAST_SKIP = (b'"event":"checkpoint"', b'"event":"log.')  # the log's own entries


def _fast_fields(line: bytes) -> tuple[int, str] | None:
    """``(seq, prev)`` read from the fixed tail of a canonical entry without parsing the JSON,
    or None when the line is not plainly canonical or may be a checkpoint or a recovery.

    Safe because the next line's ``prev`` covers every byte of this one, and the last line is
    parsed in full; anything unusual takes the full parse.
    """
    if not line.startswith(b'{"actor":') or _FAST_SKIP[0] in line or _FAST_SKIP[1] in line:
        return None
    i = line.rfind(b',"prev":"')
    if i < 0:
        return None
    tail = line[i + 80:]
    digits = tail[8:-1]
    if tail[:8] != b'","seq":' or tail[-1:] != b"}" or not digits.isdigit() or (
            len(digits) > 1 and digits[:1] == b"0"):
        return None
    return int(digits), line[i + 9:i + 80].decode("latin-1")


def _parse_entry(line: bytes, lineno: int, want: int) -> dict[str, Any] | LogProblem:
    try:
        entry = json.loads(line)
    except ValueError:
        return LogProblem(Problem.CHANGED, lineno, want,
                          f"line {lineno} (seq {want}): not valid JSON: the entry was changed")
    if type(entry) is not dict or entry.keys() != ENTRY_KEYS or type(entry["seq"]) is not int:
        return LogProblem(Problem.CHANGED, lineno, want,
                          f"line {lineno} (seq {want}): not a log entry: it was changed")
    return entry


def require_intact(path: Path, public_key: Ed25519PublicKey) -> LogReport:
    """The raising gate on ``verify_log``: ``VerificationError`` naming the first bad entry."""
    report = verify_log(path, public_key)
    if report.problem is not None:
        raise VerificationError(f"{path}: {report.problem.message}")
    return report
