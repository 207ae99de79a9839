"""The writer's view of the log's end: the head it continues from, and whether it may.

A writer never reads the whole log: it reads backwards from the end to the last checkpoint and
the line before it. It continues only from a tail it can account for (ADR 0008): the log is
empty, or its last line is a checkpoint that this home's key signed over the line before it.
Anything else (entries no checkpoint covers, a checkpoint that does not verify, lines that are
not entries) is refused with ``UnsignedTailError`` or ``LogWriteError``: a writer never signs
over entries it did not write.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import format as fmt
from .checkpoints import checkpoint_problem
from .format import CHECKPOINT, GENESIS, RECOVERED, SYSTEM_ACTOR, LogWriteError, line_hash

_FIRST_READ = 1 << 13  # most tails are one checkpoint and the line before: read little first


@dataclass(frozen=True)
class Head:
    size: int  # the file size this head describes
    seq: int  # the last entry's seq, -1 when the log is empty
    hash: str  # the last line's hash, GENESIS when empty
    since: int  # entries after the last checkpoint


class UnsignedTailError(LogWriteError):
    """The log ends in entries no signed checkpoint covers: written without the key, or left by
    a writer that crashed. Nothing is appended until an operator resolves it."""

    def __init__(self, path: Path, first: int, last: int, reason: str) -> None:
        self.first, self.last = first, last
        super().__init__(
            f"refusing to append to {path}: {reason}. Nothing was written. Run 'skydd log verify'; "
            "if a crashed Skydd writer left them, review them and accept them with "
            "'skydd log seal --accept-unsigned --reason TEXT' (needs the signing key); "
            "otherwise restore the log from a copy")


@dataclass(frozen=True)
class Tail:
    """The end of the log: its head, the last checkpoint and the hash of the line before it."""

    head: Head
    checkpoint: dict[str, Any] | None  # the last checkpoint entry, None when there is none
    before: str  # hash of the line before that checkpoint (GENESIS when it is the first line)

    def unsigned_range(self) -> tuple[int, int] | None:
        """``(first, last)`` seq of the entries after the last checkpoint, None when none."""
        if self.head.since == 0:
            return None
        return self.head.seq - self.head.since + 1, self.head.seq


def parse_tail_line(line: bytes, path: Path) -> dict[str, Any]:
    try:
        entry = json.loads(line)
    except ValueError as err:
        raise LogWriteError(f"the last entries of {path} are damaged (not JSON); "
                            "run 'skydd log verify' before appending") from err
    if (not isinstance(entry, dict) or entry.keys() != fmt.ENTRY_KEYS
            or not isinstance(entry.get("seq"), int)):
        raise LogWriteError(f"the last entries of {path} are damaged (not log entries); "
                            "run 'skydd log verify' before appending")
    return entry


def read_tail(fd: int, size: int, path: Path) -> Tail:
    """Read backwards from ``size`` to the last checkpoint and the line before it."""
    if size == 0:
        return Tail(Head(0, -1, GENESIS, 0), None, GENESIS)
    pos, buf, step, seen = size, b"", _FIRST_READ, 0
    while True:
        start = max(0, pos - step)
        buf = os.pread(fd, pos - start, start) + buf
        pos, step = start, min(step * 2, fmt.CHUNK)
        lines = buf.split(b"\n")[:-1]
        complete = lines if pos == 0 else lines[1:]  # the first piece may be a partial line
        for i in range(len(complete) - 1 - seen, -1, -1):
            entry = parse_tail_line(complete[i], path)
            if entry["event"] != CHECKPOINT:
                seen += 1
                continue
            if i == 0 and pos > 0:
                break  # the line before the checkpoint is not read yet
            last = parse_tail_line(complete[-1], path)
            head = Head(size, last["seq"], line_hash(complete[-1]), len(complete) - 1 - i)
            return Tail(head, entry, line_hash(complete[i - 1]) if i else GENESIS)
        else:
            if pos == 0:  # no checkpoint anywhere
                if not complete:
                    raise LogWriteError(f"{path} holds no complete entry")
                last = parse_tail_line(complete[-1], path)
                return Tail(Head(size, last["seq"], line_hash(complete[-1]), len(complete)),
                            None, GENESIS)


def trusted_head(tail: Tail, public_key: Ed25519PublicKey, key_id: str, path: Path, *,
                 accept_unsigned: bool = False) -> Head:
    """The head to continue from, when the tail is one this writer can account for.

    ``accept_unsigned`` lets entries after a valid checkpoint pass (``skydd log seal``)."""
    head, cp = tail.head, tail.checkpoint
    if head.seq < 0:
        return head
    if cp is None:
        raise LogWriteError(f"refusing to append to {path}: it holds no checkpoint at all, so "
                            "nothing in it is signed (rewritten?). Nothing was written; run "
                            "'skydd log verify' and restore the log from a copy")
    bad = checkpoint_problem(cp, public_key, key_id)
    if bad is None and cp["prev"] != tail.before:
        bad = "does not follow the line before it"
    if bad is not None:
        raise LogWriteError(f"refusing to append to {path}: its last checkpoint (seq {cp['seq']}) "
                            f"{bad}. Nothing was written; run 'skydd log verify'")
    unsigned = tail.unsigned_range()
    if unsigned is not None and not accept_unsigned:
        first, last = unsigned
        what = f"seq {first}" if first == last else f"seq {first}–{last}"
        raise UnsignedTailError(path, first, last,
                                f"{what} after the last signed checkpoint (seq {cp['seq']}) "
                                f"{'is' if first == last else 'are'} not signed and this "
                                "process did not write them")
    return head


def last_newline(fd: int, size: int) -> int:
    """The offset just after the last newline in the first ``size`` bytes (0 when none)."""
    pos = size
    while pos > 0:
        start = max(0, pos - fmt.CHUNK)
        i = os.pread(fd, pos - start, start).rfind(b"\n")
        if i >= 0:
            return start + i + 1
        pos = start
    return 0


def recover_torn(log_fd: int, path: Path, cut: int, size: int) -> dict[str, Any]:
    """A crash left a line without its newline: keep the bytes aside and cut them off the
    log; the returned ``log.recovered`` entry records that in the chain, so nothing passes
    silently."""
    fragment = os.pread(log_fd, size - cut, cut)
    saved = path.with_name(f"{path.name}.torn-{cut}")
    n = 0
    while saved.exists():
        n += 1
        saved = path.with_name(f"{path.name}.torn-{cut}.{n}")
    fd = os.open(saved, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, fragment)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)
    os.ftruncate(log_fd, cut)
    os.fdatasync(log_fd)
    return {"event": RECOVERED, "actor": SYSTEM_ACTOR,
            "data": {"offset": cut, "bytes": len(fragment), "sha256": line_hash(fragment),
                     "saved_as": saved.name}}


def fsync_dir(path: Path) -> None:
    """Make a directory entry (a new file's name) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
