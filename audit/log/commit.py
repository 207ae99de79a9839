"""The bookkeeping of ``AuditLog``'s group commit: what callers ask for, what is in flight,
and what the commits achieved (``CommitStats``, printed by ``make bench``)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from .format import Pending


@dataclass(frozen=True)
class CommitStats:
    """What a writer's group commit achieved: callers' entries, commits (each one write, one
    ``fdatasync`` and at least one signed checkpoint), the largest batch, and the most commits
    whose ``fdatasync`` ran at once."""

    entries: int = 0
    commits: int = 0
    largest: int = 0
    overlap: int = 0
    writing: float = 0.0  # seconds spent writing batches (tail, lines, hashes, signing, write)
    syncing: float = 0.0  # seconds spent in fdatasync, summed over commits (they overlap)

    @property
    def mean_batch(self) -> float:
        return self.entries / self.commits if self.commits else 0.0

    @property
    def mean_write(self) -> float:
        return self.writing / self.commits if self.commits else 0.0

    @property
    def mean_sync(self) -> float:
        return self.syncing / self.commits if self.commits else 0.0


@dataclass(eq=False)
class Request:
    items: list[Pending]
    seal: bool = False
    accept: tuple[str, str] | None = None  # (actor, reason): sign over an unsigned tail
    done: bool = False
    lead: bool = False  # this caller writes a batch (it found none running, or was promoted)
    wake: threading.Lock = field(default_factory=threading.Lock)  # held while its caller waits
    result: list[dict[str, Any]] = field(default_factory=list)
    error: BaseException | None = None


@dataclass(eq=False)
class Written:
    """One batch written and not yet known durable (a commit in the pipeline)."""

    number: int  # commits complete in this order
    start: int  # file offset where its bytes begin
    end: int
    cuts: int  # len(AuditLog._cuts) when it was written
    entries: int
    writing: float  # seconds it took to write
