"""The training gate's interface: is a user's required training current at ``at``, and if not, why.

``TrainingSource`` is what the access decision asks. ``StoreTrainingSource`` answers from the
training store (``identity.training_store``, the inventory's ``training_store.url``);
``FileTrainingSource`` from a file of records named by the identity settings' ``training_file``.
A source that cannot answer raises ``TrainingUnavailable`` and the decision denies (fail closed).

The file (YAML or JSON)::

    required: [information-security, confidentiality]     # course ids every user needs
    users:                                                 # by username or HSA-id
      anna.torsby:
        information-security: 2027-06-30T00:00:00Z         # valid until (UTC)
        confidentiality: 2027-01-31T00:00:00Z
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from .errors import TrainingUnavailable

if TYPE_CHECKING:
    from estate.inventory import Inventory

    from .settings import IdentitySettings

@dataclass(frozen=True)
class TrainingStatus:
    current: bool
    reason: str | None = None  # why not, when not current

    @staticmethod
    def ok() -> TrainingStatus:
        return TrainingStatus(True)


@runtime_checkable
class TrainingSource(Protocol):
    def training_status(self, username: str, hsa_id: str | None, at: datetime) -> TrainingStatus:
        """Whether ``username`` (or the holder of ``hsa_id``) has every required course current
        at ``at``; raises ``TrainingUnavailable`` when the records cannot be read."""
        ...


def _as_time(value: Any, where: str) -> datetime:
    from policies.checks import parse_time
    from policies.errors import EvidenceMissing

    try:
        return parse_time(value)
    except EvidenceMissing as err:
        raise TrainingUnavailable(f"{where}: {err}") from err


@dataclass(frozen=True)
class TrainingRecords:
    required: tuple[str, ...]
    valid_until: Mapping[str, Mapping[str, datetime]]  # user -> course -> valid until

    @staticmethod
    def parse(doc: Any, where: str) -> TrainingRecords:
        if not isinstance(doc, dict) or not isinstance(doc.get("required"), list):
            raise TrainingUnavailable(f"{where}: expected a mapping with a 'required' list")
        unknown = set(doc) - {"required", "users"}
        if unknown:
            raise TrainingUnavailable(f"{where}: unknown keys {sorted(unknown)}")
        required = tuple(str(c) for c in doc["required"])
        users = doc.get("users") or {}
        if not isinstance(users, dict):
            raise TrainingUnavailable(f"{where}: 'users' must be a mapping")
        table: dict[str, dict[str, datetime]] = {}
        for user, courses in users.items():
            if not isinstance(courses, dict):
                raise TrainingUnavailable(f"{where}: users.{user} must map course to a time")
            table[str(user)] = {str(c): _as_time(t, f"{where}: users.{user}.{c}")
                                for c, t in courses.items()}
        return TrainingRecords(required, table)

    def status(self, username: str, hsa_id: str | None, at: datetime) -> TrainingStatus:
        record = self.valid_until.get(username)
        if record is None and hsa_id:
            record = self.valid_until.get(hsa_id)
        if record is None:
            return TrainingStatus(False, f"no training records for {username}")
        missing = [c for c in self.required if c not in record]
        if missing:
            return TrainingStatus(False, f"required course(s) not completed: {', '.join(missing)}")
        expired = sorted((record[c], c) for c in self.required if record[c] <= at)
        if expired:
            until, course = expired[0]
            return TrainingStatus(False, f"course {course} expired at {until:%Y-%m-%dT%H:%M:%SZ}")
        return TrainingStatus.ok()


class FileTrainingSource:
    """Training records from a YAML/JSON file, re-read when the file changes.

    The file is looked at (``stat``) at most once per ``recheck_seconds`` of the decisions' ``at``
    (and whenever ``at`` moves backwards by more than that), not on every decision: an edit is
    seen within ``recheck_seconds``. A file that cannot be read denies (``TrainingUnavailable``).
    """

    def __init__(self, path: Path, *, recheck_seconds: float = 1.0) -> None:
        self.path = path
        self.recheck_seconds = recheck_seconds
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._records: TrainingRecords | None = None
        self._checked_at: float | None = None

    def _load(self, now: float) -> TrainingRecords:
        records, checked = self._records, self._checked_at
        if records is not None and checked is not None and abs(now - checked) < self.recheck_seconds:
            return records
        try:
            st = os.stat(self.path)
        except OSError as err:
            raise TrainingUnavailable(f"training records {self.path}: {err.strerror}") from err
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if self._records is None or stamp != self._stamp:
                try:
                    doc = YAML(typ="safe").load(self.path.read_text(encoding="utf-8"))
                except (OSError, YAMLError, UnicodeDecodeError) as err:
                    raise TrainingUnavailable(f"training records {self.path}: {err}") from err
                self._records = TrainingRecords.parse(doc, str(self.path))
                self._stamp = stamp
            self._checked_at = now
            return self._records

    def training_status(self, username: str, hsa_id: str | None, at: datetime) -> TrainingStatus:
        return self._load(at.timestamp()).status(username, hsa_id, at)


class StoreTrainingSource:
    """The training store (``identity.training_store``) as a ``TrainingSource``.

    Opened on first use; a user's standing is cached for ``ttl`` seconds (of ``at``) and judged
    again at each ``at`` from its courses' validity, so a lapse is seen at once and a new
    completion within ``ttl``. Users unknown to the store are not trained.
    """

    def __init__(self, url: str, *, ttl: float = 30) -> None:
        self.url, self.ttl = url, ttl
        self._store: Any = None
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Any]] = {}

    def _open(self) -> Any:
        from .training_store import TrainingStore, TrainingStoreError, redact_url

        with self._lock:
            if self._store is None:
                try:
                    self._store = TrainingStore(self.url, create=False)
                except TrainingStoreError as err:
                    raise TrainingUnavailable(f"training store {redact_url(self.url)}: {err}") from err
            return self._store

    def _standing(self, username: str, at: datetime) -> Any:
        now = at.timestamp()
        hit = self._cache.get(username)
        if hit is not None and 0 <= now - hit[0] < self.ttl:
            return hit[1]
        from sqlalchemy.exc import SQLAlchemyError

        try:
            standing = self._open().standing(username, at)
        except SQLAlchemyError as err:
            raise TrainingUnavailable(f"training store unreadable: {type(err).__name__}") from err
        self._cache[username] = (now, standing)
        return standing

    def training_status(self, username: str, hsa_id: str | None, at: datetime) -> TrainingStatus:
        standing = self._standing(username, at)
        if standing is None:
            return TrainingStatus(False, f"{username} is not in the training store")
        if hsa_id and standing.hsa_id and standing.hsa_id != hsa_id:
            return TrainingStatus(False, f"{username}: the HSA-id does not match the training store")
        for course in standing.courses:
            if course.valid_until is None:
                return TrainingStatus(False, f"required course {course.course} not completed")
            if course.valid_until <= at:
                return TrainingStatus(False, f"course {course.course} expired at "
                                             f"{course.valid_until:%Y-%m-%dT%H:%M:%SZ}")
        return TrainingStatus.ok()


def training_source(inventory: Inventory, home: Path,
                    settings: IdentitySettings) -> TrainingSource:
    """The configured source: ``training_file`` from the identity settings when set, else the
    inventory's training store (by URL)."""
    if settings.training_file:
        return FileTrainingSource(Path(settings.training_file))
    return StoreTrainingSource(inventory.training_store.url)
