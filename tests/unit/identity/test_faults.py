"""Faults of issue 14 judged by the identity layer: a clock 10 minutes ahead, and the JWKS
endpoint unreachable beyond the stale window. A real HTTPS test IdP on loopback serves the keys.

Skydd takes time as a parameter everywhere, so "the machine's clock 10 minutes ahead" is the
decision and the waiver judged at ``at = true now + 10 min`` (what ``datetime.now`` would return on
that machine), against tokens the IdP minted at the true now; and, for a whole ``skydd`` process,
its clock really set 10 minutes ahead with libfaketime (``tests/lab/test_level_d.py`` does the
same to a real Keycloak token).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from identity.decision import AccessDecision, Policy
from identity.errors import KeysUnavailable
from identity.settings import IdentitySettings
from identity.tokens import Verifier
from identity.training import TrainingStatus
from policies import Waiver
from tests.conftest import skewed_clock

from .fake_idp import FakeIdp

SKYDD = str(Path(sys.executable).parent / "skydd")

TRUE_NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
AHEAD = dt.timedelta(minutes=10)
SETTINGS = IdentitySettings(jwks_lifespan_seconds=300, jwks_cooldown_seconds=30,
                            jwks_stale_seconds=600, leeway_seconds=10, max_auth_age_seconds=3600)
POLICY = Policy(municipality_groups=frozenset({"torsby", "sunne", "hagfors"}), max_auth_age_seconds=3600)


class Trained:
    def training_status(self, username: str, hsa_id: str | None, at: dt.datetime) -> TrainingStatus:
        return TrainingStatus(True)


@pytest.fixture
def idp(tmp_path: Path) -> Iterator[FakeIdp]:
    server = FakeIdp(tmp_path)
    yield server
    try:
        server.stop()
    except OSError:
        pass


def decider(idp: FakeIdp) -> AccessDecision:
    return AccessDecision(Verifier.from_inventory(idp.inventory(), SETTINGS), POLICY, Trained())


def test_a_clock_ten_minutes_ahead_judges_tokens_by_its_own_time(idp: FakeIdp) -> None:
    """What must hold, on a Skydd machine whose clock is 10 minutes ahead of the IdP's:
    a token the IdP issues now (exp = now + 5 min, as Keycloak's 300 s access tokens) is already
    past ``exp`` + leeway (10 s) by Skydd's clock, so it is denied as expired, never allowed; a
    token with exp beyond the skew is allowed (iat in Skydd's past is fine). The same token is
    allowed by a correct clock, so the deny comes from the skew and not from the token. A clock
    10 minutes *behind* sees ``iat`` 10 minutes in the future beyond the leeway: denied as
    issued in the future."""
    access = decider(idp)
    token = idp.token(TRUE_NOW)  # exp = TRUE_NOW + 300 s
    assert access.decide(token, TRUE_NOW).allow

    ahead = decider(idp).decide(token, TRUE_NOW + AHEAD)
    assert not ahead.allow
    assert [r.cause for r in ahead.reasons] == ["expired"]

    long_lived = idp.token(TRUE_NOW, exp=int((TRUE_NOW + 2 * AHEAD).timestamp()))
    assert decider(idp).decide(long_lived, TRUE_NOW + AHEAD).allow

    behind = decider(idp).decide(long_lived, TRUE_NOW - AHEAD)
    assert not behind.allow and [r.cause for r in behind.reasons] == ["iat"]
    # within the leeway a skew is tolerated: 9 s behind still allows
    assert decider(idp).decide(long_lived, TRUE_NOW - dt.timedelta(seconds=9)).allow


def test_a_clock_ten_minutes_ahead_counts_a_waiver_expiring_in_five_minutes_as_expired() -> None:
    """What must hold: a waiver approved to expire 5 minutes from the true now no longer waives
    anything on a machine whose clock is 10 minutes ahead (``active`` is False: expiry is
    judged by the machine's clock, with no grace), while a correct clock still counts it."""
    waiver = Waiver(id="w1", control="d.key-files-private", target=None, reason="CA migration",
                    requester="alice", requested_at=TRUE_NOW - dt.timedelta(days=1),
                    expires_at=TRUE_NOW + dt.timedelta(minutes=5), approver="bob",
                    approved_at=TRUE_NOW - dt.timedelta(hours=20))
    assert waiver.active(TRUE_NOW)
    assert not waiver.active(TRUE_NOW + AHEAD)


def test_a_skydd_whose_clock_runs_ten_minutes_ahead_counts_a_waiver_expired(tmp_path: Path) -> None:
    """What must hold, with the process's real clock 10 minutes ahead (libfaketime): a waiver
    requested and approved (signed, by two officers) to expire in 5 minutes is active for a
    correct clock and expired for the skewed one; the signed log stays intact under it."""
    env = {**os.environ, "SKYDD_HOME": str(tmp_path / "home"), "NO_COLOR": "1"}

    def skydd(*args: str, actor: str = "alice", clock: list[str] | None = None) -> str:
        r = subprocess.run([*(clock or []), SKYDD, *args], env={**env, "SKYDD_ACTOR": actor},
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    skydd("waiver", "request", "d.key-files-private", "--reason", "CA migration", "--expires", expires)
    (waiver,) = json.loads(skydd("waiver", "list", "--format", "json"))
    skydd("waiver", "approve", waiver["id"], actor="bob")

    def state(clock: list[str] | None) -> str:
        (found,) = json.loads(skydd("waiver", "list", "--format", "json", clock=clock))
        return str(found["state"])

    assert state(None) == "active"
    assert state(skewed_clock("+10m")) == "expired"
    assert state(skewed_clock("+4m")) == "active"  # so the skew, not the tool, expires it
    assert "intact" in skydd("log", "verify", clock=skewed_clock("+10m"))


def test_jwks_unreachable_within_the_stale_window_verifies_then_beyond_it_denies(idp: FakeIdp) -> None:
    """What must hold, with lifespan 300 s and stale window 600 s: after the IdP's JWKS endpoint
    goes away (port closed), a token signed with the cached key is still allowed up to
    lifespan + stale after the last good fetch; beyond that every token is denied with
    ``keys_unavailable`` (a new one and a token verified before alike), and no decision allows
    on keys it cannot refresh."""
    access = decider(idp)
    t0 = TRUE_NOW
    remembered = idp.token(t0, exp=int((t0 + dt.timedelta(hours=2)).timestamp()))
    assert access.decide(remembered, t0).allow
    fetched = idp.jwks_requests()
    assert fetched == 1
    idp.stop()  # Keycloak's JWKS endpoint unreachable from now on

    within = t0 + dt.timedelta(seconds=300 + 500)
    fresh_token = idp.token(within)
    assert access.decide(fresh_token, within).allow  # stale keys, inside the window
    assert access.verifier.jwks.state(within.timestamp())["last_error"]  # it did try, and failed

    beyond = t0 + dt.timedelta(seconds=300 + 600 + 31)
    for token in (idp.token(beyond), remembered):
        d = access.decide(token, beyond)
        assert not d.allow
        assert d.reasons[0].cause == "keys_unavailable", d.reasons
    with pytest.raises(KeysUnavailable, match="beyond the stale window"):
        access.verifier.verify(idp.token(beyond), beyond)
