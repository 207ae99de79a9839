"""Level e: training records that gate access to the social-care system.

Evidence (kind ``training.users``) lists the realm's users with ``can_reach`` / ``has_role``,
``created_at``, ``first_login_at``, ``in_store`` and, per required course, its completion times
and validity; ``store`` holds the times of the last import, directory sync and enforcement run.
Validity is judged at ``at``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from ..checks import Outcome, named_check, parse_duration, parse_time, resolve
from ..errors import EvidenceMissing


def _users(data: Any) -> list[Mapping[str, Any]]:
    users = resolve(data, ("users",), "users")
    if not isinstance(users, list) or not users:
        raise EvidenceMissing("no users were observed in the realm")
    return users


def _required(data: Any) -> list[Mapping[str, Any]]:
    req = resolve(data, ("required_courses",), "required_courses")
    if not isinstance(req, list) or not req:
        raise EvidenceMissing("the training store defines no required course for the role")
    return req


def _course_state(course: Mapping[str, Any], at: datetime, by: datetime | None = None
                  ) -> tuple[str, datetime | None]:
    """('current'|'expired'|'missing', last completion) at ``at``; with ``by``, only
    completions on or before ``by`` count."""
    days = course.get("validity_days")
    if not isinstance(days, int) or days < 1:
        raise EvidenceMissing(f"course {course.get('id')!r} has no validity period")
    times = [parse_time(t) for t in course.get("completions") or []]
    cutoff = min(at, by) if by is not None else at
    done = [t for t in times if t <= cutoff]
    if not done:
        return "missing", None
    last = max(done)
    return ("current" if at < last + timedelta(days=days) else "expired"), last


def _untrained(user: Mapping[str, Any], at: datetime, by: datetime | None = None) -> list[str]:
    courses = user.get("courses")
    if not isinstance(courses, list):
        raise EvidenceMissing(f"user {user.get('id')!r} has no course list")
    out = []
    for c in courses:
        state, last = _course_state(c, at, by)
        if state != "current":
            out.append(f"{c.get('id')} {state}" + (f" (last {last:%Y-%m-%d})" if last else ""))
    return out


def _judge(users: list[Mapping[str, Any]], select: Callable[[Mapping[str, Any]], bool],
           problems: Callable[[Mapping[str, Any]], list[str]], what: str, none: str) -> Outcome:
    chosen = [u for u in users if select(u)]
    bad = {str(u.get("id")): "; ".join(p) for u in chosen if (p := problems(u))}
    if bad:
        listed = ", ".join(f"{k} ({v})" for k, v in sorted(bad.items())[:6])
        more = f" … {len(bad) - 6} more" if len(bad) > 6 else ""
        return Outcome(False, f"{len(bad)} of {len(chosen)} {what}: {listed}{more}", bad)
    if not chosen:
        return Outcome(True, none, {"users": 0})
    return Outcome(True, f"all {len(chosen)} checked user(s) pass", {"users": len(chosen)})


@named_check("training_current")
def training_current(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    """Every user who can reach the system has each required course within its validity."""
    _required(data)
    return _judge(_users(data), lambda u: bool(u.get("can_reach")), lambda u: _untrained(u, at),
                  "user(s) who can reach the system lack current training",
                  "no user can reach the system")


@named_check("training_before_first_access")
def training_before_first_access(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    """Users created within ``new_within`` who can reach the system were trained before their
    first login (or, never having logged in, are trained now, before it)."""
    _required(data)
    window = parse_duration(params.get("new_within", "90d"))

    def is_new(u: Mapping[str, Any]) -> bool:
        created = u.get("created_at")
        return bool(u.get("can_reach")) and created is not None and at - parse_time(created) <= window

    def problems(u: Mapping[str, Any]) -> list[str]:
        first = u.get("first_login_at")
        if first is None:
            return _untrained(u, at)
        first_t = parse_time(first)
        late = _untrained(u, first_t, by=first_t)
        return [f"{p} at first login {first_t:%Y-%m-%d %H:%M}Z" for p in late]

    return _judge(_users(data), is_new, problems, "new user(s) not trained before first access",
                  "no new user can reach the system")


@named_check("training_store_recent")
def training_store_recent(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    """The store was fed by the LMS within ``import_within`` and synced with the directory
    within ``sync_within``."""
    store = resolve(data, ("store",), "store")
    _required(data)
    bad, seen = [], {}
    for key, limit in (("last_import_at", params.get("import_within", "35d")),
                       ("last_sync_at", params.get("sync_within", "1d"))):
        value = store.get(key) if isinstance(store, Mapping) else None
        seen[f"store.{key}"] = value
        if value is None:
            bad.append(f"{key}: never")
        elif at - parse_time(value) > parse_duration(limit):
            bad.append(f"{key} = {value}, older than {limit}")
    if bad:
        return Outcome(False, "training store not current: " + "; ".join(bad), seen)
    return Outcome(True, f"last import {seen['store.last_import_at']}, last directory sync "
                         f"{seen['store.last_sync_at']}", seen)


@named_check("training_record_for_role")
def training_record_for_role(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    """No user holds the role without a training record for each required course."""
    _required(data)

    def problems(u: Mapping[str, Any]) -> list[str]:
        if not u.get("in_store"):
            return ["not in the training store"]
        return [f"{c.get('id')} never completed" for c in u.get("courses") or []
                if not c.get("completions")]

    return _judge(_users(data), lambda u: bool(u.get("has_role")), problems,
                  "role holder(s) without a training record", "no user holds the role")


@named_check("training_enforced")
def training_enforced(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    """Enforcement ran within ``within`` and no user without current training holds the role."""
    store = resolve(data, ("store",), "store")
    _required(data)
    last = store.get("last_enforcement_at") if isinstance(store, Mapping) else None
    limit = params.get("within", "1d")
    if last is None or at - parse_time(last) > parse_duration(limit):
        when = "never" if last is None else f"last at {last}, older than {limit}"
        return Outcome(False, f"training enforcement has not run: {when}",
                       {"store.last_enforcement_at": last})
    return _judge(_users(data), lambda u: bool(u.get("has_role")), lambda u: _untrained(u, at),
                  "role holder(s) without current training", "no user holds the role")
