"""``AuditLog``, the writer: group commit, ``flock`` between processes, torn-tail recovery.

Writers hold an exclusive ``flock`` while they append and re-read the tail when another process
appended meanwhile. ``AuditLog`` commits in groups: the entries that threads hand it while a
batch is written go out in the next single write and ``fdatasync``, and the next batch is
written while earlier ones sync (a pipeline; batches complete in order). Every ``append``
returns only once its entry, its checkpoint and everything before them are durable.

Every commit ends in a checkpoint, so outside the lock the log always ends signed, and a writer
continues only from a tail it can account for (``tail.trusted_head``, ADR 0008): the first
commit to an empty log starts with a signed genesis checkpoint, and entries no checkpoint covers
are refused, never signed over. ``accept_unsigned`` is the operator's explicit way out.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from estate.canonical import rfc3339

from ..signing import Signer
from .checkpoints import checkpoint_entry
from .commit import CommitStats, Request, Written
from .format import (
    ACCEPTED,
    CHECKPOINT,
    CHECKPOINT_EVERY,
    Item,
    LogWriteError,
    entry_line,
    line_hash,
    pending_item,
)
from .tail import Head, fsync_dir, last_newline, read_tail, recover_torn, trusted_head
from .witness import Warn
from .witness import record as witness_record

Clock = Callable[[], datetime]
PIPELINE_DEPTH = 4  # batches written and not yet synced, at most
FLOCK_TURN = 0.1  # seconds a busy writer holds the flock before other processes get a turn


class AuditLog:
    """A writer: ``with AuditLog(path, signer) as log: log.append(...)``.

    Thread-safe; concurrent ``append`` calls are group-committed (one write and one
    ``fdatasync`` per batch, ending in a checkpoint), and up to ``pipeline`` batches sync at
    once. Safe with writers in other processes (``flock``). Raises ``UnsignedTailError`` rather
    than sign over entries it did not write.
    """

    def __init__(self, path: Path, signer: Signer, *, clock: Clock = lambda: datetime.now(UTC),
                 checkpoint_every: int = CHECKPOINT_EVERY, pipeline: int = PIPELINE_DEPTH) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        if pipeline < 1:
            raise ValueError("pipeline must be at least 1 (1: each batch syncs before the next is written)")
        self.path = Path(path)
        self._signer = signer
        self._clock = clock
        self._every = checkpoint_every
        self._depth = pipeline
        self._head: Head | None = None
        # _mutex guards the queue, the writer role, the flock state and the commit counters;
        # it is held only for a few steps. _done signals commits completing (in order).
        self._mutex = threading.Lock()
        self._done = threading.Condition(self._mutex)
        self._queue: list[Request] = []
        self._busy = False  # a caller holds the writer role: it is writing a batch
        self._io = threading.Lock()  # writing a batch, or cutting back a failed one
        self._flocked_at: float | None = None  # when this writer took the flock it still holds
        self._written = 0  # commits written
        self._completed = 0  # commits completed, in order
        self._cuts: list[int] = []  # offsets a failed sync cut the file back to
        self._stats = CommitStats()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        except OSError as err:
            raise LogWriteError(f"cannot open the audit log {self.path}: {err.strerror}") from err
        if created:
            fsync_dir(self.path.parent)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def stats(self) -> CommitStats:
        """Entries, commits, the largest batch so far (for benchmarks and monitoring)."""
        return self._stats

    def append(self, event: str, actor: str, data: Mapping[str, Any], *,
               at: datetime | None = None) -> dict[str, Any]:
        """Append one entry; returns it (with its ``seq``) once it is durable."""
        return self._submit(Request([pending_item(event, actor, data, at)]))[0]

    def append_many(self, items: Iterable[Item], *, at: datetime | None = None) -> list[dict[str, Any]]:
        """Append many entries in one write and one ``fdatasync``; returns them once durable."""
        return self._submit(Request([pending_item(e, a, d, at) for e, a, d in items]))

    def checkpoint(self) -> dict[str, Any] | None:
        """Sign the current head now (nothing when the last entry already is a checkpoint)."""
        out = self._submit(Request([], seal=True))
        return out[0] if out else None

    def accept_unsigned(self, actor: str, reason: str) -> dict[str, Any] | None:
        """Sign over the entries after the last valid checkpoint, recording who accepted them
        and why in a ``log.accepted`` entry; None when there were none to accept."""
        if not actor or not reason.strip():
            raise ValueError("accepting unsigned entries needs an actor and a reason")
        out = self._submit(Request([], accept=(actor, reason)))
        return out[0] if out else None

    def close(self) -> None:
        """Release the file; nothing to sign, every commit already ended in a checkpoint."""
        if self._fd < 0:
            return
        os.close(self._fd)  # closing the descriptor also drops a flock still held
        self._fd = -1

    # Group commit in a pipeline. A caller that finds no batch being written takes the writer
    # role: it takes everything queued, writes it as one batch ending in a checkpoint, hands
    # the role to the first caller that queued meanwhile, and only then runs its fdatasync, so
    # the next batch is written while this one syncs and the kernel can serve several syncs
    # with one journal commit. Batches complete in the order they were written: a caller
    # returns once its own fdatasync and every earlier batch's have succeeded. Callers sleep on
    # their own lock; the writer wakes exactly the callers it committed.
    def _submit(self, req: Request) -> list[dict[str, Any]]:
        if self._fd < 0:
            raise LogWriteError(f"the audit log {self.path} is closed")
        with self._mutex:
            self._queue.append(req)
            if self._busy:
                req.wake.acquire()  # free until now: this never blocks
            else:
                self._busy = req.lead = True
        if not req.lead:
            try:
                req.wake.acquire()  # released by a writer: committed, or promoted to write
            except BaseException:
                self._abandon(req)
                raise
        if not req.done:
            self._lead()
        if req.error is not None:
            raise req.error
        return req.result

    def _lead(self) -> None:
        with self._mutex:  # while the pipeline is full, the batch grows
            while self._written - self._completed >= self._depth:
                self._done.wait()
            batch, self._queue = self._queue, []
        commit = None
        try:
            commit = self._write(batch)
        finally:
            with self._mutex:  # the next batch is written while this one syncs
                if self._queue:
                    self._promote(self._queue[0])
                else:
                    self._busy = False
                    self._unlock_when_idle()
            if commit is not None:
                self._sync(commit, batch)
            for r in batch:
                r.done = True
                if not r.lead:
                    r.wake.release()

    @staticmethod
    def _promote(req: Request) -> None:
        req.lead = True
        req.wake.release()

    def _abandon(self, req: Request) -> None:
        """The caller was interrupted while it waited (KeyboardInterrupt): withdraw its
        request if it was not taken yet, and pass the writer role on if it had it."""
        with self._mutex:
            if req.lead and not req.done:  # promoted: it will not write, so someone else must
                self._queue.remove(req)
                if self._queue:
                    self._promote(self._queue[0])
                else:
                    self._busy = False
                    self._unlock_when_idle()
            elif req in self._queue:
                self._queue.remove(req)

    def _write(self, batch: Sequence[Request]) -> Written | None:
        """Write one batch, ending in a checkpoint; None when nothing was written."""
        try:
            self._take_turn()
            with self._io:
                self._lock_file()
                return self._write_locked(batch, time.perf_counter())
        except BaseException as err:
            for req in batch:
                if req.error is None:
                    req.error = err
            return None

    def _write_locked(self, batch: Sequence[Request], began: float) -> Written | None:
        accept = next((r for r in batch if r.accept is not None), None)
        head, system = self._refresh(accept.accept if accept else None)
        lines: list[bytes] = []
        seq, prev, since = head.seq, head.hash, head.since
        sealed = since == 0
        entries = 0
        if seq < 0 and (system or any(r.items for r in batch)):
            seq, prev = self._seal(lines, seq, prev)  # genesis: a signed start
        now = rfc3339(self._clock())  # one reading per batch: it commits at once
        for entry in system:  # a recovered torn line, an acceptance
            entry.update(seq=seq + 1, at=now, prev=prev)
            line = entry_line(entry)
            lines.append(line)
            seq, prev, since, sealed = seq + 1, line_hash(line), since + 1, False
        if accept is not None and system:
            accept.result = [system[-1]]
        every, sha256 = self._every, hashlib.sha256
        for req in batch:
            out: list[dict[str, Any]] = []
            for item in req.items:  # checked and encoded by the caller: add at, prev, seq
                seq += 1
                at = item.at or now
                line = item.line(seq, at, prev)
                lines.append(line)
                out.append({"seq": seq, "at": at, "event": item.event, "actor": item.actor,
                            "data": item.data, "prev": prev})
                prev = "sha256:" + sha256(line).hexdigest()
                since += 1
                sealed = False
                if since >= every:
                    seq, prev = self._seal(lines, seq, prev)
                    since, sealed = 0, True
            entries += len(req.items)
            if req.seal and not sealed and seq >= 0:
                out.append(self._checkpoint_entry(seq, prev))
                line = entry_line(out[-1])
                lines.append(line)
                seq, prev, since, sealed = seq + 1, line_hash(line), 0, True
            if req is not accept:
                req.result = out if req.seal else [e for e in out if e["event"] != CHECKPOINT]
        if (not system and not entries) or not lines:
            return None  # nothing to write: not even a genesis
        if not sealed:  # every commit ends signed: nothing of ours is left unsigned
            seq, prev = self._seal(lines, seq, prev)
            since = 0
        lines.append(b"")
        data = b"\n".join(lines)
        self._write_all(head.size, data)
        self._head = Head(head.size + len(data), seq, prev, since)
        with self._mutex:
            self._written += 1
            return Written(self._written, head.size, head.size + len(data), len(self._cuts),
                           entries, time.perf_counter() - began)

    def _sync(self, commit: Written, batch: Sequence[Request]) -> None:
        """Make one written batch durable, then complete it after every earlier one."""
        error: LogWriteError | None = None
        began = time.perf_counter()
        try:
            os.fdatasync(self._fd)
        except OSError as err:
            error = LogWriteError(f"cannot append to the audit log {self.path}: {err.strerror}")
            error.__cause__ = err
            with self._io:  # no batch is being written while the file is cut back
                self._cut_back(commit.start)
        synced = time.perf_counter() - began
        with self._done:
            while self._completed != commit.number - 1:
                self._done.wait()
            if error is None and any(cut <= commit.start for cut in self._cuts[commit.cuts:]):
                error = LogWriteError(  # an earlier batch failed to sync and took this one along
                    f"cannot append to the audit log {self.path}: an earlier write failed")
            self._completed = commit.number
            in_flight = self._written - self._completed
            self._unlock_when_idle()
            self._done.notify_all()
            if error is None:
                stats = self._stats
                self._stats = CommitStats(stats.entries + commit.entries, stats.commits + 1,
                                          max(stats.largest, commit.entries),
                                          max(stats.overlap, in_flight + 1),
                                          stats.writing + commit.writing, stats.syncing + synced)
        if error is not None:
            for req in batch:
                if req.error is None:
                    req.error = error

    def _seal(self, lines: list[bytes], seq: int, prev: str) -> tuple[int, str]:
        line = entry_line(self._checkpoint_entry(seq, prev))
        lines.append(line)
        return seq + 1, line_hash(line)

    def _checkpoint_entry(self, seq: int, prev: str) -> dict[str, Any]:
        return checkpoint_entry(self._signer, seq, prev, self._clock())

    def _write_all(self, start: int, data: bytes) -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as err:
            self._cut_back(start)
            raise LogWriteError(f"cannot append to the audit log {self.path}: {err.strerror}") from err

    def _cut_back(self, start: int) -> None:
        """Leave no half-written or unsynced batch behind: cut the file back to ``start``
        (with ``_io`` held). Batches written after it are cut too, and fail."""
        try:
            os.ftruncate(self._fd, start)
            os.fdatasync(self._fd)
        except OSError:
            pass
        self._head = None  # the next batch re-reads the tail
        with self._mutex:
            self._cuts.append(start)

    def _take_turn(self) -> None:
        """After ``FLOCK_TURN`` seconds of holding the ``flock`` (batch after batch), let the
        syncs in flight drain and release it, so writers in other processes get a turn. Runs
        with the writer role and without ``_io``, which a failing sync needs to cut back."""
        with self._mutex:
            held = self._flocked_at
            if held is None or time.monotonic() - held <= FLOCK_TURN:
                return
            while self._written != self._completed:
                self._done.wait()
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._flocked_at = None

    def _lock_file(self) -> None:
        """Hold the exclusive ``flock`` (with ``_io``); the pipeline keeps it while batches are
        being written or synced."""
        if self._flocked_at is None:  # only the writer role takes it
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            with self._mutex:
                self._flocked_at = time.monotonic()

    def _unlock_when_idle(self) -> None:
        """Release the ``flock`` once no batch is being written or synced (with ``_mutex``):
        every batch ended in a checkpoint, so the log others see ends signed."""
        if self._flocked_at is not None and not self._busy and self._written == self._completed:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._flocked_at = None

    def _refresh(self, accept: tuple[str, str] | None) -> tuple[Head, list[dict[str, Any]]]:
        """The head to continue from, and the log's own entries to write first.

        Re-reads the tail when another writer appended since our last write, and refuses a tail
        this writer cannot account for (``UnsignedTailError``) unless ``accept`` says who accepts
        it and why. A torn last line is cut off and recorded (``log.recovered``)."""
        size = os.fstat(self._fd).st_size
        head = self._head
        if head is not None and head.size == size:
            return head, []
        if head is not None and size < head.size:
            raise LogWriteError(f"refusing to append to {self.path}: it shrank from {head.size} to "
                                f"{size} bytes since this process wrote to it (cut back?); "
                                "run 'skydd log verify'")
        complete = last_newline(self._fd, size) if size and os.pread(
            self._fd, 1, size - 1) != b"\n" else size
        tail = read_tail(self._fd, complete, self.path)
        self._head = trusted_head(tail, self._signer.public_key, self._signer.key_id, self.path,
                                  accept_unsigned=accept is not None)
        system: list[dict[str, Any]] = []
        if complete < size:
            system.append(recover_torn(self._fd, self.path, complete, size))
        unsigned = tail.unsigned_range()
        if accept is not None and unsigned is not None:
            first, last = unsigned
            system.append({"event": ACCEPTED, "actor": accept[0], "data": {
                "from_seq": first, "to_seq": last, "head": tail.head.hash,
                "reason": accept[1], "key_id": self._signer.key_id}})
        return self._head, system


def append(path: Path, signer: Signer, event: str, actor: str, data: Mapping[str, Any],
           *, at: datetime | None = None, witness: str | None = None,
           warn: Warn | None = None) -> dict[str, Any]:
    """Append one durable entry followed by a checkpoint (a one-shot writer that closes), then
    record that checkpoint in the witness (``witness``: a history URL; None: the one configured
    for the log's home, if any). The entry stands whatever the witness does; a witness that is
    unreachable or refuses the log is reported through ``warn`` (default: a logged warning)."""
    with AuditLog(path, signer) as audit_log:
        entry = audit_log._submit(Request([pending_item(event, actor, data, at)], seal=True))[0]
    witness_record(path, signer.public_key, witness, warn)
    return entry


def accept_unsigned(path: Path, signer: Signer, actor: str, reason: str, *,
                    witness: str | None = None, warn: Warn | None = None) -> dict[str, Any] | None:
    """``skydd log seal --accept-unsigned``: sign over an unsigned tail, recording who and why;
    the new checkpoint goes to the witness as for ``append``."""
    with AuditLog(path, signer) as audit_log:
        entry = audit_log.accept_unsigned(actor, reason)
    if entry is not None:
        witness_record(path, signer.public_key, witness, warn)
    return entry
