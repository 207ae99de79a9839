"""The console's pure security logic: PKCE, constant-time compares, sessions (idle and absolute
timeouts, logout), pending logins (state once, bound to the browser, 10 minutes), and the officer
check on verified claims."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from skydd.officers import Officer
from skydd.web.console.security import (
    LOGIN_TTL_SECONDS,
    SessionStore,
    new_id,
    officer_problems,
    pkce_pair,
    s256,
    same,
)

GRETA = Officer("5e1f0a11-0000-4000-8000-000000000001", "Greta Officer (Torsby)", "greta.officer")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_s256_matches_rfc7636_appendix_b() -> None:
    assert s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_pkce_pairs_are_fresh_and_within_rfc_lengths() -> None:
    pairs = {pkce_pair() for _ in range(50)}
    assert len(pairs) == 50
    for verifier, challenge in pairs:
        assert 43 <= len(verifier) <= 128 and challenge == s256(verifier)
    assert len(new_id()) == 43  # 256 bits


@pytest.mark.parametrize(("given", "expected", "ok"), [
    ("abc", "abc", True), ("abc", "abd", False), ("", "", False), (None, "abc", False),
    ("abc", None, False), ("abc", "abcd", False)])
def test_same_is_exact_and_never_true_for_missing(given: str | None, expected: str | None, ok: bool) -> None:
    assert same(given, expected) is ok


def test_session_ends_after_the_idle_timeout() -> None:
    clock = Clock()
    store = SessionStore(idle=900, absolute=8 * 3600, clock=clock)
    s = store.create(GRETA, "id-token", {"sub": GRETA.subject})
    clock.now += 899
    assert store.get(s.id) is s
    clock.now += 899  # each use restarts the idle clock
    assert store.get(s.id) is s
    clock.now += 901
    assert store.get(s.id) is None
    clock.now -= 901
    assert store.get(s.id) is None  # gone for good, even if the clock went back


def test_session_ends_at_the_absolute_lifetime_even_when_active() -> None:
    clock = Clock()
    store = SessionStore(idle=900, absolute=3600, clock=clock)
    s = store.create(GRETA, "t", {})
    for _ in range(7):
        clock.now += 500
        assert store.get(s.id) is s
    clock.now += 200  # 3700 s after creation, 200 s after last use
    assert store.get(s.id) is None


def test_logout_drops_the_session_and_ids_are_unguessable() -> None:
    store = SessionStore()
    a, b = store.create(GRETA, "t", {}), store.create(GRETA, "t", {})
    assert a.id != b.id and a.csrf != b.csrf and a.csrf != a.id
    assert store.drop(a.id) is a
    assert store.get(a.id) is None and store.get(b.id) is b
    assert store.get(None) is None and store.get("") is None and store.get("A" * 43) is None


def test_a_pending_login_is_taken_once_by_the_same_browser() -> None:
    store = SessionStore()
    p = store.begin_login("binding-1")
    assert p.state != p.nonce and len(p.verifier) >= 43
    assert store.take_login(p.state, "binding-2") is None  # another browser: refused and spent
    assert store.take_login(p.state, "binding-1") is None
    q = store.begin_login("binding-1")
    assert store.take_login(q.state, "binding-1") == q
    assert store.take_login(q.state, "binding-1") is None  # replay
    assert store.take_login(None, "binding-1") is None and store.take_login(q.state, None) is None


def test_a_pending_login_expires() -> None:
    clock = Clock()
    store = SessionStore(clock=clock)
    p = store.begin_login("b")
    clock.now += LOGIN_TTL_SECONDS + 1
    assert store.take_login(p.state, "b") is None


OK = {"acr": "eid-card-otp", "amr": ["sc", "otp"]}


def check(claims: Mapping[str, object], roles: tuple[str, ...] = ("security-officer",)) -> list[str]:
    return officer_problems(claims, roles, required_acr="eid-card-otp", required_amr=("sc", "otp"),
                            role="security-officer")


def test_an_officer_with_card_and_otp_passes() -> None:
    assert check(OK) == []


@pytest.mark.parametrize("claims", [
    {"acr": "1", "amr": ["pwd"]}, {"amr": ["sc", "otp"]}, {"acr": "eid-card-otp", "amr": ["sc"]},
    {"acr": "eid-card-otp", "amr": "sc otp"}, {"acr": "eid-card-otp"}])
def test_without_card_and_otp_the_reason_says_so(claims: Mapping[str, object]) -> None:
    (problem,) = check(claims)
    assert "e-ID card and a one-time code" in problem


def test_without_the_role_the_reason_says_not_an_officer() -> None:
    (problem,) = check(OK, ("socialcare-user",))
    assert "not a security officer" in problem
    assert len(check({"acr": "1"}, ())) == 2
