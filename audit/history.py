"""Audit history and drift between audits.

Every audit is kept as one row: its id, inventory, time, overall status and the status of every
(control, target). SQLite at ``$SKYDD_HOME/history.db`` by default; PostgreSQL by URL
(``SKYDD_HISTORY_URL=postgresql+psycopg://user@host:port/db``). The schema is one table made
with ``create_all`` (see docs/adr/0003-reports.md).

The same database is the audit log's *witness* (docs/adr/0008-append-only-log.md): the table
``witness_checkpoints`` keeps a copy of the log's signed checkpoints outside ``$SKYDD_HOME``,
one chain per signing key. It is made on first use, not when history opens, so a database made
before it (or a role that may not create tables) keeps serving audits and drift.

Timestamps are stored in UTC on both back ends: SQLite keeps no offset, so values are converted
to UTC before they are written and read back as UTC; PostgreSQL keeps ``timestamptz`` and its
answers (in the session's time zone) are converted to UTC.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Integer,
    MetaData,
    String,
    Table,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    make_url,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError

from estate.canonical import rfc3339

from .errors import AuditError


class HistoryError(AuditError):
    """The history database could not be opened, read or written."""


class WitnessConflict(HistoryError):
    """Another writer recorded a checkpoint first: read the witness again and retry."""


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime stored as UTC; naive values are refused on the way in."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime: history times must carry a timezone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


_meta = MetaData()
audits = Table(
    "audits", _meta,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), unique=True, nullable=False),
    Column("inventory", String(200), nullable=False, index=True),
    Column("generated_at", UTCDateTime(), nullable=False),
    Column("status", String(20), nullable=False),
    Column("statuses", JSON, nullable=False),  # {"control|target": status}
)

# The witness: signed checkpoints of audit logs, each extending the one before it. ``previous``
# is the size of the checkpoint a row extends (0 for the first), unique per origin, so two
# writers that both extend the same checkpoint cannot both be recorded: the chain stays linear.
witness_checkpoints = Table(
    "witness_checkpoints", _meta,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("origin", String(80), nullable=False),  # the key id that signs the log
    Column("size", BigInteger, nullable=False),  # lines up to and including the checkpoint
    Column("head", String(80), nullable=False),  # the checkpoint line's hash
    Column("end_byte", BigInteger, nullable=False),  # file offset just after that line
    Column("previous", BigInteger, nullable=False),
    Column("signed_seq", BigInteger, nullable=False),  # what the checkpoint signs: seq, hash
    Column("signed_hash", String(80), nullable=False),
    Column("signature", String(200), nullable=False),
    Column("key_id", String(80), nullable=False),
    Column("at", String(40), nullable=False),  # the checkpoint's own RFC 3339 time, as signed
    Column("recorded_at", UTCDateTime(), nullable=False),
    UniqueConstraint("origin", "size", name="uq_witness_size"),
    UniqueConstraint("origin", "previous", name="uq_witness_previous"),
)
# A reset of the witness (``skydd log witness --reset``): the operator's signed statement that the
# log was restored behind what the witness held. Reset ``epoch`` N starts the chain ``origin/N``.
witness_resets = Table(
    "witness_resets", _meta,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("origin", String(80), nullable=False),  # the key id that signs the log
    Column("epoch", Integer, nullable=False),  # 1 for the first reset
    Column("from_size", BigInteger, nullable=False),  # what the witness held before it
    Column("from_head", String(80), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("reason", String(2000), nullable=False),
    Column("at", String(40), nullable=False),
    Column("signature", String(200), nullable=False),  # the log's key over the other columns
    UniqueConstraint("origin", "epoch", name="uq_witness_reset_epoch"),
)
RESET_FIELDS = ("origin", "epoch", "from_size", "from_head", "actor", "reason", "at", "signature")
WITNESS_FIELDS = ("origin", "size", "head", "end_byte", "previous", "signed_seq", "signed_hash",
                  "signature", "key_id", "at", "recorded_at")

# A finding in one of these needs attention; moving into one is "newly failing".
FAILING = frozenset({"fail", "error", "manual"})
FIXED = frozenset({"pass"})


class History:
    """The audits of every inventory, oldest first by insertion order."""

    def __init__(self, url: str) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError as err:
            raise HistoryError(f"history URL {url!r} is not a database URL "
                               "(e.g. postgresql+psycopg://user@host/db)") from err
        self.url = parsed.render_as_string(hide_password=True)
        self.backend = parsed.get_backend_name()
        self.database = parsed.database
        self._witness_ready = False
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        try:
            connect = {"connect_timeout": 10} if parsed.get_backend_name() == "postgresql" else {}
            self.engine: Engine = create_engine(parsed, future=True, pool_pre_ping=True,
                                                connect_args=connect)
            _meta.create_all(self.engine, tables=[audits])
        except (SQLAlchemyError, ImportError) as err:
            raise HistoryError(f"history {self.url}: cannot open ({_reason(err)})") from err

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.engine.dispose()

    def previous(self, inventory: str) -> dict[str, Any] | None:
        """The latest audit of ``inventory`` recorded so far, or ``None``."""
        rows = list(self._select(inventory, 1))
        return rows[0] if rows else None

    def audits(self, inventory: str, limit: int = 20) -> list[dict[str, Any]]:
        """The latest ``limit`` audits of ``inventory``, newest first."""
        return list(self._select(inventory, limit))

    def _select(self, inventory: str, limit: int) -> Iterator[dict[str, Any]]:
        query = (select(audits).where(audits.c.inventory == inventory)
                 .order_by(audits.c.seq.desc()).limit(limit))
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(query).mappings().all()
        except SQLAlchemyError as err:
            raise HistoryError(f"history {self.url}: cannot read ({_reason(err)})") from err
        for row in rows:
            statuses = row["statuses"]
            yield {"id": row["id"], "inventory": row["inventory"],
                   "generated_at": row["generated_at"], "status": row["status"],
                   "statuses": json.loads(statuses) if isinstance(statuses, str) else statuses}

    def record(self, report: Mapping[str, Any]) -> None:
        """Keep one audit (a report dict); recording the same report id twice is an error."""
        values = {"id": report["id"], "inventory": report["inventory"]["name"],
                  "generated_at": _instant(report["generated_at"]),
                  "status": report["summary"]["status"],
                  "statuses": statuses_of(report["findings"])}
        try:
            with self.engine.begin() as conn:
                conn.execute(audits.insert().values(**values))
        except SQLAlchemyError as err:
            raise HistoryError(f"history {self.url}: cannot record audit {report['id']} "
                               f"({_reason(err)})") from err


    # The witness (see docs/adr/0008-append-only-log.md). What a checkpoint must satisfy to be
    # recorded is decided by audit.log.witness; this only stores and keeps the chain linear.
    def _witness_table(self) -> None:
        if self._witness_ready:
            return
        try:
            _meta.create_all(self.engine, tables=[witness_checkpoints, witness_resets])
        except SQLAlchemyError as err:
            raise HistoryError(f"history {self.url}: cannot make the witness table "
                               f"({_reason(err)})") from err
        self._witness_ready = True

    def witnessed(self, origin: str) -> dict[str, Any] | None:
        """The latest checkpoint the witness holds for the log signed by ``origin``, or None."""
        self._witness_table()
        query = (select(witness_checkpoints).where(witness_checkpoints.c.origin == origin)
                 .order_by(witness_checkpoints.c.size.desc()).limit(1))
        try:
            with self.engine.connect() as conn:
                row = conn.execute(query).mappings().first()
        except SQLAlchemyError as err:
            raise HistoryError(f"history {self.url}: cannot read the witness ({_reason(err)})") from err
        return None if row is None else {k: row[k] for k in WITNESS_FIELDS}

    def witness(self, checkpoint: Mapping[str, Any]) -> None:
        """Record a checkpoint that extends the latest one (``previous`` is that one's size, 0
        for the first). ``WitnessConflict`` when another writer recorded one first."""
        self._witness_table()
        values = {k: checkpoint[k] for k in WITNESS_FIELDS}
        try:
            with self.engine.begin() as conn:
                latest = conn.execute(
                    select(witness_checkpoints.c.size)
                    .where(witness_checkpoints.c.origin == values["origin"])
                    .order_by(witness_checkpoints.c.size.desc()).limit(1)).scalar()
                if (latest or 0) != values["previous"] or values["size"] <= values["previous"]:
                    raise WitnessConflict(f"history {self.url}: the witness moved on to size "
                                          f"{latest} meanwhile")
                conn.execute(witness_checkpoints.insert().values(**values))
        except IntegrityError as err:
            raise WitnessConflict(f"history {self.url}: another writer recorded a checkpoint "
                                  f"first ({_reason(err)})") from err
        except SQLAlchemyError as err:
            raise HistoryError(f"history {self.url}: cannot record a checkpoint in the witness "
                               f"({_reason(err)})") from err


    def witness_resets(self, origin: str) -> list[dict[str, Any]]:
        """The resets of the witness for the log signed by ``origin``, oldest first."""
        self._witness_table()
        query = (select(witness_resets).where(witness_resets.c.origin == origin)
                 .order_by(witness_resets.c.epoch))
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(query).mappings().all()
        except SQLAlchemyError as err:
            raise HistoryError(f"history {self.url}: cannot read the witness ({_reason(err)})") from err
        return [{k: r[k] for k in RESET_FIELDS} for r in rows]

    def reset_witness(self, reset: Mapping[str, Any]) -> None:
        """Record a reset; ``WitnessConflict`` when another one took its epoch first."""
        self._witness_table()
        try:
            with self.engine.begin() as conn:
                conn.execute(witness_resets.insert().values(**{k: reset[k] for k in RESET_FIELDS}))
        except IntegrityError as err:
            raise WitnessConflict(f"history {self.url}: the witness was reset meanwhile "
                                  f"({_reason(err)})") from err
        except SQLAlchemyError as err:
            raise HistoryError(f"history {self.url}: cannot record the reset ({_reason(err)})") from err


def _instant(value: str) -> datetime:
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (AttributeError, ValueError) as err:
        raise HistoryError(f"generated_at {value!r} is not an RFC 3339 time") from err
    if at.tzinfo is None or at.utcoffset() is None:
        raise HistoryError(f"generated_at {value!r} has no timezone")
    return at


def _reason(err: BaseException) -> str:
    text = str(getattr(err, "orig", None) or err).strip().splitlines()
    return text[0] if text else type(err).__name__


def statuses_of(findings: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    return {f"{f['control']}|{f['target']}": f["status"] for f in findings}


def drift(previous: Mapping[str, Any] | None, findings: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What is newly failing and newly fixed since the previous audit of the same inventory.

    Newly failing: a finding that is now fail, error or manual and was not one of those before
    (including one the previous audit did not cover). Newly fixed: a finding that passes now and
    was fail, error or manual before. A waived finding is neither. ``newly_failing`` and
    ``newly_fixed`` list ``{control, target}``; ``transitions`` adds the status before and now.
    """
    if previous is None:
        return {"previous": None, "newly_failing": [], "newly_fixed": [], "transitions": []}
    before, now = previous["statuses"], statuses_of(findings)
    failing, fixed, transitions = [], [], []
    for key in sorted(now):
        was, status = before.get(key), now[key]
        control, target = key.split("|", 1)
        if status in FAILING and was not in FAILING:
            failing.append({"control": control, "target": target})
        elif status in FIXED and was in FAILING:
            fixed.append({"control": control, "target": target})
        else:
            continue
        transitions.append({"control": control, "target": target, "before": was, "status": status})
    at = previous["generated_at"]
    return {"previous": {"id": previous["id"],
                         "generated_at": rfc3339(at) if isinstance(at, datetime) else str(at)},
            "newly_failing": failing, "newly_fixed": fixed, "transitions": transitions}
