"""``AuditLog``, the writer: group commit, ``flock`` between processes, torn-tail recovery.

Writers hold an exclusive ``flock`` while they append and re-read the tail when another process
appended meanwhile. ``AuditLog`` commits in groups: the entries that threads hand it while a
flush runs go out in the next single write and ``fdatasync``; every ``append`` returns only once
its entry is durable.

Every commit ends in a checkpoint, so outside the lock the log always ends signed, and a writer
continues only from a tail it can account for (``tail.trusted_head``, ADR 0008): the first
commit to an empty log starts with a signed genesis checkpoint, and entries no checkpoint covers
are refused, never signed over. ``accept_unsigned`` is the operator's explicit way out.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from estate.canonical import canonical_json, rfc3339

from ..signing import Signer
from .checkpoints import checkpoint_entry
from .format import (
    ACCEPTED,
    CHECKPOINT,
    CHECKPOINT_EVERY,
    RECOVERED,
    SYSTEM_ACTOR,
    Item,
    LogWriteError,
    Pending,
    entry_line,
    line_hash,
    pending_item,
)
from .tail import Head, last_newline, read_tail, trusted_head

Clock = Callable[[], datetime]


@dataclass
class _Request:
    items: list[Pending]
    seal: bool = False
    accept: tuple[str, str] | None = None  # (actor, reason): sign over an unsigned tail
    done: bool = False
    result: list[dict[str, Any]] = field(default_factory=list)
    error: BaseException | None = None


class AuditLog:
    """A writer: ``with AuditLog(path, signer) as log: log.append(...)``.

    Thread-safe; concurrent ``append`` calls are group-committed (one write and one
    ``fdatasync`` per batch, ending in a checkpoint). Safe with writers in other processes
    (``flock``). Raises ``UnsignedTailError`` rather than sign over entries it did not write.
    """

    def __init__(self, path: Path, signer: Signer, *, clock: Clock = lambda: datetime.now(UTC),
                 checkpoint_every: int = CHECKPOINT_EVERY) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        self.path = Path(path)
        self._signer = signer
        self._clock = clock
        self._every = checkpoint_every
        self._head: Head | None = None
        self._cond = threading.Condition()
        self._queue: list[_Request] = []
        self._flushing = False
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

    def append(self, event: str, actor: str, data: Mapping[str, Any], *,
               at: datetime | None = None) -> dict[str, Any]:
        """Append one entry; returns it (with its ``seq``) once it is durable."""
        return self._submit(_Request([pending_item(event, actor, data, at)]))[0]

    def append_many(self, items: Iterable[Item], *, at: datetime | None = None) -> list[dict[str, Any]]:
        """Append many entries in one write and one ``fdatasync``; returns them once durable."""
        return self._submit(_Request([pending_item(e, a, d, at) for e, a, d in items]))

    def checkpoint(self) -> dict[str, Any] | None:
        """Sign the current head now (nothing when the last entry already is a checkpoint)."""
        out = self._submit(_Request([], seal=True))
        return out[0] if out else None

    def accept_unsigned(self, actor: str, reason: str) -> dict[str, Any] | None:
        """Sign over the entries after the last valid checkpoint, recording who accepted them
        and why in a ``log.accepted`` entry; None when there were none to accept."""
        if not actor or not reason.strip():
            raise ValueError("accepting unsigned entries needs an actor and a reason")
        out = self._submit(_Request([], accept=(actor, reason)))
        return out[0] if out else None

    def close(self) -> None:
        """Release the file; nothing to sign, every commit already ended in a checkpoint."""
        if self._fd < 0:
            return
        os.close(self._fd)
        self._fd = -1

    # group commit: the first caller flushes; callers arriving meanwhile queue for the next batch
    def _submit(self, req: _Request) -> list[dict[str, Any]]:
        if self._fd < 0:
            raise LogWriteError(f"the audit log {self.path} is closed")
        with self._cond:
            self._queue.append(req)
            while not req.done:
                if self._flushing:
                    self._cond.wait()
                    continue
                self._flushing = True
                batch, self._queue = self._queue, []
                self._cond.release()
                try:
                    self._commit(batch)
                finally:
                    self._cond.acquire()
                    self._flushing = False
                    self._cond.notify_all()
        if req.error is not None:
            raise req.error
        return req.result

    def _commit(self, batch: Sequence[_Request]) -> None:
        try:
            with self._locked():
                accept = next((r for r in batch if r.accept is not None), None)
                head, system = self._refresh(accept.accept if accept else None)
                buf = bytearray()
                seq, prev, since = head.seq, head.hash, head.since
                sealed = since == 0
                written: list[_Request] = []
                if seq < 0 and (system or any(r.items for r in batch)):
                    seq, prev = self._seal(buf, seq, prev)  # genesis: a signed start
                now = rfc3339(self._clock())  # one reading per batch: it commits at once
                for entry in system:  # a recovered torn line, an acceptance
                    entry.update(seq=seq + 1, at=now, prev=prev)
                    line = entry_line(entry)
                    buf += line + b"\n"
                    seq, prev, since, sealed = seq + 1, line_hash(line), since + 1, False
                if accept is not None and system:
                    accept.result = [system[-1]]
                for req in batch:
                    mark = (len(buf), seq, prev, since, sealed)
                    out: list[dict[str, Any]] = []
                    try:
                        for event, actor, data, at in req.items:
                            entry = {"seq": seq + 1, "at": rfc3339(at) if at else now,
                                     "event": event, "actor": actor, "data": data, "prev": prev}
                            line = entry_line(entry)
                            buf += line
                            buf += b"\n"
                            seq, prev, since, sealed = seq + 1, line_hash(line), since + 1, False
                            out.append(entry)
                            if since >= self._every:
                                seq, prev = self._seal(buf, seq, prev)
                                since, sealed = 0, True
                        if req.seal and not sealed and seq >= 0:
                            out.append(self._checkpoint_entry(seq, prev))
                            line = canonical_json(out[-1])
                            buf += line + b"\n"
                            seq, prev, since, sealed = seq + 1, line_hash(line), 0, True
                    except (TypeError, ValueError) as err:  # data not JSON-able, naive time
                        del buf[mark[0]:]
                        _, seq, prev, since, sealed = mark
                        req.error = LogWriteError(f"audit log entry refused: {err}")
                        continue
                    if req is not accept:
                        req.result = [e for e in out if e["event"] != CHECKPOINT or req.seal]
                    written.append(req)
                if not system and not any(r.items for r in written):
                    buf.clear()  # every entry was refused: not even a genesis is written
                if buf:
                    if not sealed:  # every commit ends signed: nothing of ours is left unsigned
                        seq, prev = self._seal(buf, seq, prev)
                        since = 0
                    self._write_durably(head.size, bytes(buf))
                    self._head = Head(head.size + len(buf), seq, prev, since)
        except BaseException as err:
            for req in batch:
                if req.error is None:
                    req.error = err
        finally:
            for req in batch:
                req.done = True

    def _seal(self, buf: bytearray, seq: int, prev: str) -> tuple[int, str]:
        line = canonical_json(self._checkpoint_entry(seq, prev))
        buf += line
        buf += b"\n"
        return seq + 1, line_hash(line)

    def _checkpoint_entry(self, seq: int, prev: str) -> dict[str, Any]:
        return checkpoint_entry(self._signer, seq, prev, self._clock())

    def _write_durably(self, start: int, data: bytes) -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            os.fdatasync(self._fd)
        except OSError as err:
            try:  # leave no half-written entry behind
                os.ftruncate(self._fd, start)
                os.fdatasync(self._fd)
            except OSError:
                pass
            self._head = None
            raise LogWriteError(f"cannot append to the audit log {self.path}: {err.strerror}") from err

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

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
            system.append(self._recover_torn(complete, size))
        unsigned = tail.unsigned_range()
        if accept is not None and unsigned is not None:
            first, last = unsigned
            system.append({"event": ACCEPTED, "actor": accept[0], "data": {
                "from_seq": first, "to_seq": last, "head": tail.head.hash,
                "reason": accept[1], "key_id": self._signer.key_id}})
        return self._head, system

    def _recover_torn(self, cut: int, size: int) -> dict[str, Any]:
        """A crash left a line without its newline: keep the bytes aside and cut them off the
        log; the returned ``log.recovered`` entry records that in the chain, so nothing passes
        silently."""
        fragment = os.pread(self._fd, size - cut, cut)
        saved = self.path.with_name(f"{self.path.name}.torn-{cut}")
        n = 0
        while saved.exists():
            n += 1
            saved = self.path.with_name(f"{self.path.name}.torn-{cut}.{n}")
        fd = os.open(saved, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, fragment)
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.path.parent)
        os.ftruncate(self._fd, cut)
        os.fdatasync(self._fd)
        return {"event": RECOVERED, "actor": SYSTEM_ACTOR,
                "data": {"offset": cut, "bytes": len(fragment), "sha256": line_hash(fragment),
                         "saved_as": saved.name}}


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append(path: Path, signer: Signer, event: str, actor: str, data: Mapping[str, Any],
           *, at: datetime | None = None) -> dict[str, Any]:
    """Append one durable entry followed by a checkpoint (a one-shot writer that closes)."""
    with AuditLog(path, signer) as audit_log:
        return audit_log._submit(_Request([pending_item(event, actor, data, at)], seal=True))[0]


def accept_unsigned(path: Path, signer: Signer, actor: str, reason: str) -> dict[str, Any] | None:
    """``skydd log seal --accept-unsigned``: sign over an unsigned tail, recording who and why."""
    with AuditLog(path, signer) as audit_log:
        return audit_log.accept_unsigned(actor, reason)
