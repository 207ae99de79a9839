"""Training meets the directory: who can reach the social-care system (Keycloak groups and the
``socialcare-user`` role), syncing that staff into the training store, and enforcement — the
role is taken from users without current training and given back when they complete.

``read_directory`` and ``execute`` do the Keycloak I/O (python-keycloak); ``plan`` is pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .training_store import SOCIALCARE_ROLE, TrainingStore, UserStanding


class DirectoryError(Exception):
    """Keycloak could not be read or changed (unreachable, refused, unexpected answer)."""


@dataclass(frozen=True)
class DirectoryUser:
    id: str
    username: str
    enabled: bool
    hsa_id: str | None
    groups: tuple[str, ...]
    direct_role: bool  # the role is mapped on the user itself (what enforcement manages)
    group_role: bool  # the role comes through a group (enforcement cannot take it away)
    created_at: datetime | None
    first_login_at: datetime | None

    @property
    def has_role(self) -> bool:
        return self.direct_role or self.group_role

    @property
    def can_reach(self) -> bool:
        """Can sign in to the social-care system: enabled, in a municipality group, with the role."""
        return self.enabled and bool(self.groups) and self.has_role


def connect(url: str, realm: str, username: str, password: str, ca_file: str | None) -> Any:
    """A python-keycloak admin client for ``realm``, logged in through the master realm."""
    from keycloak import KeycloakAdmin
    from keycloak.exceptions import KeycloakError

    try:
        admin = KeycloakAdmin(server_url=url.rstrip("/") + "/", username=username, password=password,
                              realm_name=realm, user_realm_name="master",
                              verify=ca_file if ca_file else True, timeout=20)
        admin.get_realm_role(SOCIALCARE_ROLE)  # logs in and proves the realm is there
    except KeycloakError as err:
        raise DirectoryError(f"Keycloak {url} realm {realm}: {_why(err)}") from err
    except Exception as err:  # requests' connection errors and TLS failures
        raise DirectoryError(f"Keycloak {url} is unreachable: {type(err).__name__}: {err}") from err
    return admin


def _why(err: Exception) -> str:
    code = getattr(err, "response_code", None)
    msg = getattr(err, "error_message", None) or str(err)
    if isinstance(msg, bytes):
        msg = msg.decode("utf-8", "replace")
    return f"HTTP {code}: {str(msg)[:200]}" if code else str(msg)[:200]


def _ms(value: Any) -> datetime | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return datetime.fromtimestamp(value / 1000, UTC)
    return None


def read_directory(admin: Any, groups: Sequence[str], role: str = SOCIALCARE_ROLE) -> list[DirectoryUser]:
    """Every user of the realm with their municipality groups, role and first login."""
    from keycloak.exceptions import KeycloakError

    try:
        users = _all(admin.get_users, {})
        direct = {u["id"] for u in _all(lambda q: admin.get_realm_role_members(role, q), {})}
        members: dict[str, list[str]] = {}
        via_group: set[str] = set()
        for g in admin.get_groups({"briefRepresentation": "true"}):
            name = g.get("name")
            if name not in groups:
                continue
            ids = {m["id"] for m in _all(lambda q, gid=g["id"]: admin.get_group_members(gid, q), {})}
            for uid in ids:
                members.setdefault(uid, []).append(name)
            if any(r.get("name") == role for r in admin.get_group_realm_roles(g["id"])):
                via_group |= ids
        first_login: dict[str, datetime] = {}
        for ev in admin.get_events({"type": "LOGIN", "max": 100000}) or []:
            t = _ms(ev.get("time"))
            uid = ev.get("userId")
            if t and uid and (uid not in first_login or t < first_login[uid]):
                first_login[uid] = t
    except KeycloakError as err:
        raise DirectoryError(f"reading realm users: {_why(err)}") from err
    except Exception as err:
        raise DirectoryError(f"reading realm users: {type(err).__name__}: {err}") from err
    out = []
    for u in users:
        attrs = u.get("attributes") or {}
        hsa = attrs.get("hsaId")
        out.append(DirectoryUser(
            id=u["id"], username=u["username"], enabled=bool(u.get("enabled", False)),
            hsa_id=hsa[0] if isinstance(hsa, list) and hsa else (hsa if isinstance(hsa, str) else None),
            groups=tuple(sorted(members.get(u["id"], []))), direct_role=u["id"] in direct,
            group_role=u["id"] in via_group, created_at=_ms(u.get("createdTimestamp")),
            first_login_at=first_login.get(u["id"])))
    return sorted(out, key=lambda d: d.username)


def _all(fetch: Any, query: dict[str, Any], page: int = 500) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    first = 0
    while True:
        chunk = fetch({**query, "first": first, "max": page})
        out.extend(chunk)
        if len(chunk) < page:
            return out
        first += page


# -- sync --------------------------------------------------------------------------------------

def sync(store: TrainingStore, users: Iterable[DirectoryUser], at: datetime,
         role: str = SOCIALCARE_ROLE, *, dry_run: bool = False) -> list[str]:
    """Register every municipality staff member who holds the role as needing its training;
    returns the usernames that were new or changed. Records a ``sync`` event."""
    users = list(users)
    changed: list[str] = []
    known = store.users()
    with store.transaction() as s:
        for u in users:
            if not u.groups or not (u.has_role or u.username in known):
                continue
            roles = [role] if u.has_role else []
            if store.register_user(s, u.username, at, hsa_id=u.hsa_id,
                                   municipality=u.groups[0], roles=roles):
                changed.append(u.username)
        gone = store.deactivate_missing(s, {u.username for u in users})
        store.record_event(s, "sync", at, {"users": len(users), "changed": len(changed),
                                           "deactivated": gone})
        if dry_run:
            s.rollback()
    return changed + gone


# -- enforcement -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Change:
    username: str
    user_id: str
    reason: str


@dataclass(frozen=True)
class Plan:
    remove: tuple[Change, ...] = ()
    restore: tuple[Change, ...] = ()
    blocked: tuple[Change, ...] = field(default=())  # role via a group: cannot be removed per user

    @property
    def changed(self) -> bool:
        return bool(self.remove or self.restore)

    def to_dict(self) -> dict[str, Any]:
        return {k: [{"username": c.username, "reason": c.reason} for c in getattr(self, k)]
                for k in ("remove", "restore", "blocked")}


SCOPES = ("records", "reachable", "new", "all")


def _in_scope(scope: str, u: DirectoryUser, st: UserStanding | None, at: datetime | None,
              new_within: timedelta) -> bool:
    if scope == "all":
        return True
    if scope == "records":  # no record at all for some required course
        return st is None or any(c.state == "missing" for c in st.courses)
    if scope == "reachable":
        return u.can_reach
    if at is None:
        raise ValueError("scope 'new' needs at")
    return u.can_reach and u.created_at is not None and at - u.created_at <= new_within


def plan(users: Sequence[DirectoryUser], standings: Sequence[UserStanding],
         role: str = SOCIALCARE_ROLE, *, scope: str = "all", at: datetime | None = None,
         new_within: timedelta = timedelta(days=90)) -> Plan:
    """Pure: whose role to remove (no current training) and to give back (trained again).

    ``scope`` narrows removal to one control's population: ``records`` (holders with no record
    of some required course), ``reachable`` (holders who can reach the system), ``new`` (those
    created within ``new_within`` of ``at``); ``all`` takes every holder and also restores."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    by_name = {s.username: s for s in standings}
    remove: list[Change] = []
    restore: list[Change] = []
    blocked: list[Change] = []
    for u in users:
        st = by_name.get(u.username)
        entitled = st is not None and role in st.roles
        if u.has_role and not _in_scope(scope, u, st, at, new_within):
            continue
        if u.has_role:
            if st is None:
                why = "no training record"
            elif not st.courses:
                why = ""  # the role requires no course
            elif not st.current:
                why = "; ".join(f"{c.course} {c.state}" for c in st.overdue)
            else:
                why = ""
            if why:
                (remove if u.direct_role else blocked).append(Change(u.username, u.id, why))
        elif scope == "all" and st is not None and entitled and st.current and st.courses and u.enabled and u.groups:
            restore.append(Change(u.username, u.id, "training current"))
    return Plan(tuple(remove), tuple(restore), tuple(blocked))


def execute(admin: Any, the_plan: Plan, role: str = SOCIALCARE_ROLE) -> None:
    """Carry out a plan through the admin API."""
    from keycloak.exceptions import KeycloakError

    try:
        rep = admin.get_realm_role(role)
        for c in the_plan.remove:
            admin.delete_realm_roles_of_user(c.user_id, [rep])
        for c in the_plan.restore:
            admin.assign_realm_roles(c.user_id, [rep])
    except KeycloakError as err:
        raise DirectoryError(f"changing role {role}: {_why(err)}") from err
