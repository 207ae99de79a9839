"""The training store: courses with validity periods, the courses each role requires, the staff
who need them and their completions. SQLite under ``$SKYDD_HOME/training.db`` by default,
PostgreSQL by URL (``postgresql+psycopg://…``).

Natural keys make every write idempotent: a course by its code, a user by username, a
completion by (user, course, completed_at). Times are stored as UTC and come back aware; the
current time is always a parameter (``at``), never read here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    sessionmaker,
)

SOCIALCARE_ROLE = "socialcare-user"


class TrainingStoreError(Exception):
    """The store cannot be opened or written (bad URL, unreachable database)."""


class _UTC(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out (SQLite keeps no zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: training times must carry a timezone")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class User(Base):
    """A member of staff who needs training for the roles they are entitled to."""

    __tablename__ = "training_users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(255), unique=True)
    hsa_id: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    municipality: Mapped[str | None] = mapped_column(String(64), nullable=True)
    registered_at: Mapped[datetime] = mapped_column(_UTC())
    active: Mapped[bool] = mapped_column(default=True)
    roles: Mapped[list[UserRole]] = relationship(back_populates="user", cascade="all, delete-orphan")
    completions: Mapped[list[Completion]] = relationship(back_populates="user")


class UserRole(Base):
    """A role the user's job entitles them to (and that requires its courses)."""

    __tablename__ = "training_user_roles"
    __table_args__ = (UniqueConstraint("user_id", "role"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("training_users.id"))
    role: Mapped[str] = mapped_column(String(255))
    user: Mapped[User] = relationship(back_populates="roles")


class Course(Base):
    __tablename__ = "training_courses"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(255))
    validity_days: Mapped[int] = mapped_column(Integer)


class Requirement(Base):
    """Role ``role`` requires course ``course``."""

    __tablename__ = "training_requirements"
    __table_args__ = (UniqueConstraint("role", "course_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    role: Mapped[str] = mapped_column(String(255))
    course_id: Mapped[int] = mapped_column(ForeignKey("training_courses.id"))
    course: Mapped[Course] = relationship()


class Completion(Base):
    __tablename__ = "training_completions"
    __table_args__ = (UniqueConstraint("user_id", "course_id", "completed_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("training_users.id"))
    course_id: Mapped[int] = mapped_column(ForeignKey("training_courses.id"))
    completed_at: Mapped[datetime] = mapped_column(_UTC())
    source: Mapped[str] = mapped_column(String(255))
    recorded_at: Mapped[datetime] = mapped_column(_UTC())
    user: Mapped[User] = relationship(back_populates="completions")
    course: Mapped[Course] = relationship()


class StoreEvent(Base):
    """What happened to the store: an LMS import, a directory sync, an enforcement run."""

    __tablename__ = "training_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(_UTC())
    detail: Mapped[str] = mapped_column(Text, default="{}")


EVENT_KINDS = ("import", "sync", "enforcement")


# -- values ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CourseStanding:
    """One required course of one user at ``at``: current, expired or missing."""

    course: str
    title: str
    validity_days: int
    completed_at: datetime | None
    valid_until: datetime | None
    state: str  # "current" | "expired" | "missing"
    overdue_since: datetime | None  # expired: valid_until; missing: when the user was registered


@dataclass(frozen=True)
class UserStanding:
    username: str
    hsa_id: str | None
    municipality: str | None
    roles: tuple[str, ...]
    courses: tuple[CourseStanding, ...]

    @property
    def current(self) -> bool:
        return all(c.state == "current" for c in self.courses)

    @property
    def overdue(self) -> tuple[CourseStanding, ...]:
        return tuple(c for c in self.courses if c.state != "current")


def standing_of(course: Course, completions: Sequence[datetime], registered_at: datetime,
                at: datetime) -> CourseStanding:
    """Pure: the standing of one course given its completion times (the latest one counts)."""
    done = [c for c in completions if c <= at]
    if not done:
        return CourseStanding(course.code, course.title, course.validity_days, None, None,
                              "missing", registered_at)
    last = max(done)
    until = last + timedelta(days=course.validity_days)
    state = "current" if at < until else "expired"
    return CourseStanding(course.code, course.title, course.validity_days, last, until, state,
                          None if state == "current" else until)


# -- the store ---------------------------------------------------------------------------------

def default_url(home: Path) -> str:
    return f"sqlite:///{home / 'training.db'}"


def redact_url(url: str) -> str:
    """The URL without its password, for messages and evidence."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable URL>"


class TrainingStore:
    """The training records behind one SQLAlchemy engine. Opening creates missing tables."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        try:
            parsed = make_url(url)
        except ArgumentError as err:
            raise TrainingStoreError(f"training store URL {url!r} is not a database URL") from err
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            path = Path(parsed.database)
            if not create and not path.exists():
                raise TrainingStoreError(f"training store {path} does not exist")
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine: Engine = create_engine(parsed, future=True)
        except (ArgumentError, ImportError) as err:
            raise TrainingStoreError(f"training store {redact_url(url)}: {err}") from err
        if parsed.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        try:
            if create:
                Base.metadata.create_all(self.engine)
            else:
                with self.engine.connect() as conn:
                    conn.execute(select(func.count()).select_from(Course.__table__))
        except SQLAlchemyError as err:
            raise TrainingStoreError(f"training store {redact_url(url)} is unreachable: "
                                     f"{_first_line(err)}") from err

    def close(self) -> None:
        self.engine.dispose()

    def session(self) -> Session:
        return self._sessions()

    def transaction(self) -> _Tx:
        """``with store.transaction() as s:`` commits on success, rolls back on any error."""
        return _Tx(self)

    # -- writes -------------------------------------------------------------------------------

    def define_course(self, s: Session, code: str, title: str, validity_days: int) -> bool:
        """Create or update a course; True when something changed."""
        if validity_days < 1:
            raise ValueError(f"course {code}: validity must be at least one day")
        course = s.scalar(select(Course).where(Course.code == code))
        if course is None:
            s.add(Course(code=code, title=title, validity_days=validity_days))
            s.flush()
            return True
        if (course.title, course.validity_days) == (title, validity_days):
            return False
        course.title, course.validity_days = title, validity_days
        return True

    def require(self, s: Session, role: str, course_code: str) -> bool:
        course = s.scalar(select(Course).where(Course.code == course_code))
        if course is None:
            raise ValueError(f"unknown course {course_code!r}")
        if s.scalar(select(Requirement).where(Requirement.role == role,
                                              Requirement.course_id == course.id)):
            return False
        s.add(Requirement(role=role, course=course))
        s.flush()
        return True

    def register_user(self, s: Session, username: str, at: datetime, *, hsa_id: str | None = None,
                      municipality: str | None = None, roles: Iterable[str] = ()) -> bool:
        """Create or update a user and add roles (roles are entitlements: never removed here)."""
        user = s.scalar(select(User).where(User.username == username))
        changed = False
        if user is None:
            user = User(username=username, hsa_id=hsa_id, municipality=municipality,
                        registered_at=at, active=True)
            s.add(user)
            s.flush()
            changed = True
        else:
            for attr, value in (("hsa_id", hsa_id), ("municipality", municipality), ("active", True)):
                if value is not None and getattr(user, attr) != value:
                    setattr(user, attr, value)
                    changed = True
        have = {r.role for r in user.roles}
        for role in sorted(set(roles) - have):
            user.roles.append(UserRole(role=role))
            changed = True
        s.flush()
        return changed

    def deactivate_missing(self, s: Session, present: set[str]) -> list[str]:
        """Mark users no longer in the directory inactive; returns their usernames."""
        gone = [u for u in s.scalars(select(User).where(User.active.is_(True)))
                if u.username not in present]
        for u in gone:
            u.active = False
        return sorted(u.username for u in gone)

    def record_event(self, s: Session, kind: str, at: datetime, detail: dict[str, Any]) -> None:
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown store event {kind!r}")
        s.add(StoreEvent(kind=kind, at=at, detail=json.dumps(detail, sort_keys=True, default=str)))

    # -- reads --------------------------------------------------------------------------------

    def last_event(self, kind: str) -> datetime | None:
        with self.session() as s:
            return s.scalar(select(func.max(StoreEvent.at)).where(StoreEvent.kind == kind))

    def users(self) -> dict[str, User]:
        with self.session() as s:
            users = s.scalars(select(User)).all()
            for u in users:
                _ = u.roles  # load while the session is open
            return {u.username: u for u in users}

    def requirements(self) -> dict[str, list[Course]]:
        """Role → required courses."""
        out: dict[str, list[Course]] = {}
        with self.session() as s:
            for r in s.scalars(select(Requirement).order_by(Requirement.role)):
                out.setdefault(r.role, []).append(r.course)
        for courses in out.values():
            courses.sort(key=lambda c: c.code)
        return out

    def completions(self) -> dict[str, dict[str, list[datetime]]]:
        """username → course code → completion times."""
        out: dict[str, dict[str, list[datetime]]] = {}
        with self.session() as s:
            rows = s.execute(select(User.username, Course.code, Completion.completed_at)
                             .join(Completion.user).join(Completion.course))
            for username, code, when in rows:
                out.setdefault(username, {}).setdefault(code, []).append(when)
        return out

    def standings(self, at: datetime, *, usernames: Iterable[str] | None = None,
                  include_inactive: bool = False) -> list[UserStanding]:
        """Every (active) user's standing in each course their roles require, at ``at``."""
        if at.tzinfo is None:
            raise ValueError("at must carry a timezone")
        reqs, done = self.requirements(), self.completions()
        wanted = set(usernames) if usernames is not None else None
        out = []
        for name, user in sorted(self.users().items()):
            if (wanted is not None and name not in wanted) or (not user.active and not include_inactive):
                continue
            roles = tuple(sorted(r.role for r in user.roles))
            courses = {c.code: c for role in roles for c in reqs.get(role, [])}
            out.append(UserStanding(name, user.hsa_id, user.municipality, roles, tuple(
                standing_of(c, done.get(name, {}).get(code, []), user.registered_at, at)
                for code, c in sorted(courses.items()))))
        return out

    def standing(self, username: str, at: datetime) -> UserStanding | None:
        found = self.standings(at, usernames=[username])
        return found[0] if found else None


class _Tx:
    def __init__(self, store: TrainingStore) -> None:
        self.store = store

    def __enter__(self) -> Session:
        self.session = self.store.session()
        self.session.begin()
        return self.session

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                try:
                    self.session.commit()
                except SQLAlchemyError as err:
                    self.session.rollback()
                    raise TrainingStoreError(f"training store {redact_url(self.store.url)}: "
                                             f"write failed: {_first_line(err)}") from err
            else:
                self.session.rollback()
        finally:
            self.session.close()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def _first_line(err: Exception) -> str:
    return str(getattr(err, "orig", None) or err).splitlines()[0]
