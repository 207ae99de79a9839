"""The console's pure security logic: PKCE, random ids, constant-time compares, server-side
sessions with idle and absolute timeouts, pending logins (state, nonce, PKCE verifier bound to
the browser), and the officer check on verified claims."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...officers import Officer

ID_BYTES = 32  # 256-bit session ids, CSRF tokens and login bindings
LOGIN_TTL_SECONDS = 600.0
MAX_PENDING_LOGINS = 10_000
MAX_SESSIONS = 10_000


def new_id() -> str:
    """A random 256-bit value, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(ID_BYTES)


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of ``verifier`` (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def pkce_pair() -> tuple[str, str]:
    """A fresh (verifier, challenge): 43 characters of 256-bit entropy, within RFC 7636's 43..128."""
    verifier = new_id()
    return verifier, s256(verifier)


def same(given: str | None, expected: str | None) -> bool:
    """Constant-time equality of two secrets; never true when either is missing or empty."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def officer_problems(claims: Mapping[str, Any], roles: Sequence[str], *, required_acr: str,
                     required_amr: Sequence[str], role: str) -> list[str]:
    """Why verified claims do not make a console officer (empty: they do): the access
    decision's acr and amr (card + OTP) and the officer realm role."""
    problems = []
    acr = claims.get("acr")
    amr = claims.get("amr")
    methods = {m for m in amr if isinstance(m, str)} if isinstance(amr, list) else set()
    missing = [m for m in required_amr if m not in methods]
    if acr != required_acr or missing:
        problems.append(f"the login was not made with the e-ID card and a one-time code (acr "
                        f"{str(acr)[:40]!r}, required {required_acr!r}"
                        + (f"; missing {', '.join(missing)}" if missing else "") + ")")
    if role not in roles:
        problems.append(f"the account does not have the realm role {role!r}: not a security officer")
    return problems


@dataclass
class Session:
    id: str
    officer: Officer
    id_token: str
    csrf: str
    created: float
    last_seen: float
    claims: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PendingLogin:
    state: str
    nonce: str
    verifier: str
    binding: str  # sha256 of the browser's login-binding cookie
    created: float


class SessionStore:
    """Sessions and pending logins in memory (one console process). A session ends when idle
    longer than ``idle`` seconds, older than ``absolute`` seconds, or on logout; an ended id is
    never valid again (ids are random and never reused)."""

    def __init__(self, *, idle: float = 900, absolute: float = 8 * 3600,
                 clock: Callable[[], float] = time.time) -> None:
        if idle <= 0 or absolute <= 0:
            raise ValueError("session timeouts must be positive")
        self.idle, self.absolute, self.clock = idle, absolute, clock
        self._sessions: dict[str, Session] = {}
        self._pending: dict[str, PendingLogin] = {}
        self._lock = threading.Lock()

    # -- logins in flight ----------------------------------------------------------------------
    def begin_login(self, binding: str) -> PendingLogin:
        """A pending login (fresh state, nonce and PKCE verifier) bound to ``binding``, the random
        value of a cookie set in the same browser."""
        now = self.clock()
        verifier, _ = pkce_pair()
        p = PendingLogin(new_id(), new_id(), verifier, _digest(binding), now)
        with self._lock:
            self._expire(now)
            if len(self._pending) >= MAX_PENDING_LOGINS:
                oldest = min(self._pending.values(), key=lambda x: x.created)
                del self._pending[oldest.state]
            self._pending[p.state] = p
        return p

    def take_login(self, state: str | None, binding: str | None) -> PendingLogin | None:
        """The pending login of ``state`` once (it is removed), if it is not older than
        LOGIN_TTL_SECONDS and the browser presents the same binding cookie; else None."""
        if not state or not binding:
            return None
        now = self.clock()
        with self._lock:
            p = self._pending.pop(state, None)
        if p is None or now - p.created > LOGIN_TTL_SECONDS:
            return None
        return p if same(_digest(binding), p.binding) else None

    # -- sessions ------------------------------------------------------------------------------
    def create(self, officer: Officer, id_token: str, claims: Mapping[str, Any]) -> Session:
        now = self.clock()
        s = Session(new_id(), officer, id_token, new_id(), now, now, dict(claims))
        with self._lock:
            self._expire(now)
            if len(self._sessions) >= MAX_SESSIONS:
                oldest = min(self._sessions.values(), key=lambda x: x.last_seen)
                del self._sessions[oldest.id]
            self._sessions[s.id] = s
        return s

    def get(self, sid: str | None) -> Session | None:
        """The live session of ``sid`` (its idle clock restarted), or None."""
        if not sid:
            return None
        now = self.clock()
        with self._lock:
            s = self._sessions.get(sid)
            if s is None:
                return None
            if self._ended(s, now):
                del self._sessions[sid]
                return None
            s.last_seen = now
            return s

    def drop(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        with self._lock:
            return self._sessions.pop(sid, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _ended(self, s: Session, now: float) -> bool:
        return now - s.last_seen > self.idle or now - s.created > self.absolute

    def _expire(self, now: float) -> None:
        for sid in [k for k, s in self._sessions.items() if self._ended(s, now)]:
            del self._sessions[sid]
        for st in [k for k, p in self._pending.items() if now - p.created > LOGIN_TTL_SECONDS]:
            del self._pending[st]
