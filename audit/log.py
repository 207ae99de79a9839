"""The hash-chained audit log at ``$SKYDD_HOME/audit.log``.

One entry per line, canonical JSON with the keys ``seq``, ``at``, ``event``, ``actor``, ``data``
and ``prev``, where ``prev`` is the SHA-256 of the previous line's bytes (``GENESIS`` for the
first). A changed, removed or reordered entry breaks the chain. A ``checkpoint`` entry signs the
chain head with Ed25519 at least every ``CHECKPOINT_EVERY`` entries and when a writer closes.

Writers hold an exclusive ``flock`` while they append and re-read the tail when another process
appended meanwhile. ``AuditLog`` commits in groups: the entries that threads hand it while a
flush runs go out in the next single write and ``fdatasync``; every ``append`` returns only once
its entry is durable. ``verify_log`` returns a ``LogReport`` naming the first bad entry;
``require_intact`` is the raising gate built on it.
See docs/adr/0002-audit-log.md.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from estate.canonical import canonical_json, rfc3339

from .errors import AuditError, VerificationError
from .signing import Signer, checkpoint_payload, key_id, sign_checkpoint, verify

GENESIS = "sha256:" + "0" * 64
CHECKPOINT = "checkpoint"
RECOVERED = "log.recovered"
RESERVED_EVENTS = frozenset({CHECKPOINT, RECOVERED})
SYSTEM_ACTOR = "skydd"
CHECKPOINT_EVERY = 1000
ENTRY_KEYS = frozenset({"seq", "at", "event", "actor", "data", "prev"})
_CHUNK = 1 << 22

Clock = Callable[[], datetime]
Item = tuple[str, str, Mapping[str, Any]]


def line_hash(line: bytes) -> str:
    """The chain hash of one line (its bytes without the newline)."""
    return "sha256:" + hashlib.sha256(line).hexdigest()


class LogWriteError(AuditError):
    """The audit log could not be appended to (disk, permissions, or a damaged tail)."""


# -- writing -----------------------------------------------------------------------------------

@dataclass
class _Head:
    size: int  # the file size this head describes
    seq: int  # the last entry's seq, -1 when the log is empty
    hash: str  # the last line's hash, GENESIS when empty
    since: int  # entries after the last checkpoint
    sealed: bool  # the last entry is a checkpoint


@dataclass
class _Request:
    items: list[tuple[str, str, Mapping[str, Any], datetime | None]]
    seal: bool = False
    done: bool = False
    result: list[dict[str, Any]] = field(default_factory=list)
    error: BaseException | None = None


class AuditLog:
    """A writer: ``with AuditLog(path, signer) as log: log.append(...)``.

    Thread-safe; concurrent ``append`` calls are group-committed (one write and one
    ``fdatasync`` per batch). Safe with writers in other processes (``flock``). Closing writes a
    checkpoint when entries follow the last one.
    """

    def __init__(self, path: Path, signer: Signer, *, clock: Clock = lambda: datetime.now(UTC),
                 checkpoint_every: int = CHECKPOINT_EVERY) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        self.path = Path(path)
        self._signer = signer
        self._clock = clock
        self._every = checkpoint_every
        self._head: _Head | None = None
        self._cond = threading.Condition()
        self._queue: list[_Request] = []
        self._flushing = False
        self._wrote = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        except OSError as err:
            raise LogWriteError(f"cannot open the audit log {self.path}: {err.strerror}") from err
        if created:
            _fsync_dir(self.path.parent)

    def __enter__(self) -> "AuditLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(self, event: str, actor: str, data: Mapping[str, Any], *,
               at: datetime | None = None) -> dict[str, Any]:
        """Append one entry; returns it (with its ``seq``) once it is durable."""
        return self._submit(_Request([_item(event, actor, data, at)]))[0]

    def append_many(self, items: Iterable[Item], *, at: datetime | None = None) -> list[dict[str, Any]]:
        """Append many entries in one write and one ``fdatasync``; returns them once durable."""
        return self._submit(_Request([_item(e, a, d, at) for e, a, d in items]))

    def checkpoint(self) -> dict[str, Any] | None:
        """Sign the current head now (nothing when the last entry already is a checkpoint)."""
        out = self._submit(_Request([], seal=True))
        return out[0] if out else None

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            if self._wrote:
                self.checkpoint()
        finally:
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
                head = self._refresh()
                buf = bytearray()
                seq, prev, since, sealed = head.seq, head.hash, head.since, head.sealed
                written: list[_Request] = []
                now = rfc3339(self._clock())  # one reading per batch: it commits at once
                for req in batch:
                    mark = (len(buf), seq, prev, since, sealed)
                    out: list[dict[str, Any]] = []
                    try:
                        for event, actor, data, at in req.items:
                            entry = {"seq": seq + 1, "at": rfc3339(at) if at else now,
                                     "event": event, "actor": actor, "data": data, "prev": prev}
                            line = _entry_line(entry)
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
                    req.result = [e for e in out if e["event"] != CHECKPOINT or req.seal]
                    written.append(req)
                if buf:
                    self._write_durably(head.size, bytes(buf))
                    self._head = _Head(head.size + len(buf), seq, prev, since, sealed)
                    self._wrote = self._wrote or any(r.items for r in written)
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
        at = rfc3339(self._clock())
        return {"seq": seq + 1, "at": at, "event": CHECKPOINT, "actor": SYSTEM_ACTOR,
                "data": sign_checkpoint(self._signer, seq, prev, at), "prev": prev}

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

    def _refresh(self) -> _Head:
        """The chain head, re-read when another writer appended since our last write."""
        size = os.fstat(self._fd).st_size
        head = self._head
        if head is not None and head.size == size:
            return head
        if size and os.pread(self._fd, 1, size - 1) != b"\n":
            size = self._recover_torn(size)
        if head is not None and head.size < size:
            lines = os.pread(self._fd, size - head.size, head.size).split(b"\n")[:-1]
            self._head = _advance(head, lines, size, self.path)
        else:
            self._head = _scan_tail(self._fd, size, self._every, self.path)
        return self._head

    def _recover_torn(self, size: int) -> int:
        """A crash left a line without its newline: keep the bytes aside, cut them off the log
        and record that in the chain (``log.recovered``), so nothing passes silently."""
        cut = _last_newline(self._fd, size)
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
        _fsync_dir(self.path.parent)
        os.ftruncate(self._fd, cut)
        os.fdatasync(self._fd)
        head = _scan_tail(self._fd, cut, self._every, self.path)
        entry = {"seq": head.seq + 1, "at": rfc3339(self._clock()), "event": RECOVERED,
                 "actor": SYSTEM_ACTOR, "prev": head.hash,
                 "data": {"offset": cut, "bytes": len(fragment), "sha256": line_hash(fragment),
                          "saved_as": saved.name}}
        line = canonical_json(entry) + b"\n"
        self._write_durably(cut, line)
        return cut + len(line)


_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                           default=lambda v: json.loads(canonical_json(v))).encode
_string = json.encoder.encode_basestring  # what the encoder above does for a str (C-accelerated)


def _entry_line(entry: Mapping[str, Any]) -> bytes:
    """``canonical_json(entry)`` for the six entry keys, without re-sorting the top level."""
    return (f'{{"actor":{_string(entry["actor"])},"at":{_string(entry["at"])},'
            f'"data":{_encode(entry["data"])},"event":{_string(entry["event"])},'
            f'"prev":"{entry["prev"]}","seq":{entry["seq"]}}}').encode("utf-8")


def _item(event: str, actor: str, data: Mapping[str, Any], at: datetime | None
          ) -> tuple[str, str, Mapping[str, Any], datetime | None]:
    if not isinstance(event, str) or not event or event in RESERVED_EVENTS:
        raise ValueError(f"event {event!r}: must be a non-empty name other than "
                         f"{', '.join(sorted(RESERVED_EVENTS))}")
    if not isinstance(actor, str) or not actor:
        raise ValueError("actor must be a non-empty string")
    if type(data) is not dict and not isinstance(data, Mapping):
        raise ValueError("data must be a mapping")
    return event, actor, data, at


def _parse_tail_line(line: bytes, path: Path) -> dict[str, Any]:
    try:
        entry = json.loads(line)
    except ValueError as err:
        raise LogWriteError(f"the last entries of {path} are damaged (not JSON); "
                            "run 'skydd log verify' before appending") from err
    if not isinstance(entry, dict) or not isinstance(entry.get("seq"), int):
        raise LogWriteError(f"the last entries of {path} are damaged; run 'skydd log verify'")
    return entry


def _advance(head: _Head, lines: list[bytes], size: int, path: Path) -> _Head:
    seq, prev, since, sealed = head.seq, head.hash, head.since, head.sealed
    for line in lines:
        entry = _parse_tail_line(line, path)
        sealed = entry.get("event") == CHECKPOINT
        seq, prev, since = entry["seq"], line_hash(line), 0 if sealed else since + 1
    return _Head(size, seq, prev, since, sealed)


def _scan_tail(fd: int, size: int, every: int, path: Path) -> _Head:
    """Read backwards until the last checkpoint (or more than ``every`` entries) is found."""
    if size == 0:
        return _Head(0, -1, GENESIS, 0, False)
    pos, buf = size, b""
    while True:
        start = max(0, pos - _CHUNK)
        buf = os.pread(fd, pos - start, start) + buf
        pos = start
        lines = buf.split(b"\n")[:-1]
        complete = lines if pos == 0 else lines[1:]
        since = 0
        for line in reversed(complete):
            if _parse_tail_line(line, path).get("event") == CHECKPOINT:
                break
            since += 1
        else:
            if pos > 0 and since <= every:
                continue
        if complete:
            last = _parse_tail_line(complete[-1], path)
            return _Head(size, last["seq"], line_hash(complete[-1]), since,
                         last.get("event") == CHECKPOINT)
        if pos == 0:
            raise LogWriteError(f"{path} holds no complete entry")


def _last_newline(fd: int, size: int) -> int:
    pos = size
    while pos > 0:
        start = max(0, pos - _CHUNK)
        i = os.pread(fd, pos - start, start).rfind(b"\n")
        if i >= 0:
            return start + i + 1
        pos = start
    return 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append(path: Path, signer: Signer, event: str, actor: str, data: Mapping[str, Any],
           *, at: datetime | None = None) -> dict[str, Any]:
    """Append one durable entry followed by a checkpoint (a one-shot writer that closes)."""
    with AuditLog(path, signer) as audit_log:
        return audit_log._submit(_Request([_item(event, actor, data, at)], seal=True))[0]


# -- verifying ---------------------------------------------------------------------------------

class Problem(str, Enum):
    """What broke the log, as the first bad entry shows it."""

    CHANGED = "changed"
    REMOVED = "removed"
    REORDERED = "reordered"
    TORN = "torn"
    SIGNATURE = "signature"


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

    @property
    def intact(self) -> bool:
        return self.problem is None

    @property
    def unsigned(self) -> int:
        """Entries after the last checkpoint: chained, not yet signed."""
        return self.head_seq - self.last_checkpoint


Progress = Callable[[int, int], None]  # (bytes read, bytes in all)


def _read_lines(fh: Any, size: int, progress: Progress | None) -> Iterator[tuple[bytes, bool]]:
    """(line without newline, complete) for the first ``size`` bytes."""
    rest = b""
    left = size
    while left > 0:
        chunk = fh.read(min(_CHUNK, left))
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

    def __iter__(self) -> "_Peek":
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


def verify_log(path: Path, public_key: Ed25519PublicKey, *,
               progress: Progress | None = None) -> LogReport:
    """Check the chain and every checkpoint signature; name the first bad entry.

    Raises ``OSError`` when the file cannot be read. Reads a consistent prefix: the size is taken
    under a shared lock, so entries another process is appending are not seen half-written.
    """
    trusted = key_id(public_key)
    with open(path, "rb") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
        size = os.fstat(fh.fileno()).st_size
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        lines = _Peek(_read_lines(fh, size, progress))
        state = _Verifier(public_key, trusted)
        problem = state.run(lines)
    return LogReport(str(path), state.seq + 1, state.checkpoints, state.seq, state.prev,
                     state.last_checkpoint, tuple(state.recoveries), problem)


class _Verifier:
    def __init__(self, public_key: Ed25519PublicKey, trusted: str) -> None:
        self.public_key, self.trusted = public_key, trusted
        self.seq, self.prev = -1, GENESIS
        self.checkpoints, self.last_checkpoint = 0, -1
        self.recoveries: list[int] = []

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
            fields = _fast_fields(line)
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
                elif event == RECOVERED:
                    self.recoveries.append(seq)
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
        data = entry["data"]
        try:
            head, signer, signature = data["head"], data["key_id"], data["signature"]
            head_seq, head_hash = head["seq"], head["hash"]
        except (KeyError, TypeError):
            return "is malformed: it was changed"
        if entry["actor"] != SYSTEM_ACTOR:
            return f"has actor {entry['actor']!r}, not {SYSTEM_ACTOR!r}: it was changed"
        if head_seq != entry["seq"] - 1 or head_hash != entry["prev"]:
            return "does not sign the entry before it: it was changed"
        if signer != self.trusted:
            return f"is signed by {signer!s}, not by the trusted key {self.trusted}"
        try:
            verify(self.public_key, checkpoint_payload(head_seq, head_hash, str(entry["at"]), signer),
                   str(signature))
        except VerificationError:
            return "has a signature that does not verify: forged or changed"
        self.checkpoints += 1
        self.last_checkpoint = entry["seq"]
        return None


_FAST_SKIP = (b'"event":"checkpoint"', b'"event":"log.recovered"')


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
