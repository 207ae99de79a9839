"""Verifier behaviour beyond the attacks: other algorithms, remembered tokens, settings."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import jwt
import pytest

from identity.errors import IdentityConfigError, UnknownKey, WrongIssuer
from identity.jwks import JwksCache
from identity.settings import IdentitySettings, load_settings
from identity.tokens import Verifier, token_digest, unverified_header

from .fake_idp import CLIENT, FakeIdp, RealmKey

AT = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
ISS = "https://localhost:8443/realms/socialcare"


class Keys:
    def __init__(self, *keys: RealmKey) -> None:
        self.keys = list(keys)
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return json.dumps({"keys": [k.jwk for k in self.keys]}).encode()


def claims(**overrides: object) -> dict[str, object]:
    now = int(AT.timestamp())
    base = {"exp": now + 300, "iat": now, "iss": ISS, "aud": CLIENT, "azp": CLIENT, "typ": "Bearer",
            "sub": "u1", "preferred_username": "anna.torsby", "groups": ["/torsby", 3]}
    base.update(overrides)
    return base


def verifier(src: Keys, algorithms: tuple[str, ...] = ("RS256", "PS256", "ES256")) -> Verifier:
    return Verifier(issuer=ISS, client_id=CLIENT, jwks=JwksCache(src), algorithms=algorithms)


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256"])
def test_each_pinned_algorithm_verifies(alg: str) -> None:
    key = RealmKey(f"k-{alg}", alg)
    token = jwt.encode(claims(), key.private, algorithm=alg, headers={"kid": key.kid})
    verified = verifier(Keys(key)).verify(token, AT)
    assert verified.alg == alg and verified.groups == ("torsby",) and verified.hsa_id is None
    assert verified.digest == token_digest(token)
    with pytest.raises(TypeError):
        verified.claims["sub"] = "someone else"  # type: ignore[index]


def test_an_algorithm_not_configured_is_refused_even_with_a_good_key() -> None:
    key = RealmKey("k-es", "ES256")
    token = jwt.encode(claims(), key.private, algorithm="ES256", headers={"kid": key.kid})
    with pytest.raises(Exception) as err:
        verifier(Keys(key), ("RS256",)).verify(token, AT)
    assert type(err.value).__name__ == "AlgorithmNotAllowed"


def test_remembered_token_stops_verifying_when_its_key_is_withdrawn() -> None:
    k1, k2 = RealmKey("k1"), RealmKey("k2")
    src = Keys(k1, k2)
    v = verifier(src)
    token = jwt.encode(claims(exp=int(AT.timestamp()) + 3600), k1.private, algorithm="RS256",
                       headers={"kid": "k1"})
    assert v.verify(token, AT).kid == "k1"
    assert v.verify(token, AT + dt.timedelta(seconds=10)).kid == "k1"  # remembered
    src.keys = [k2]  # Keycloak withdraws k1
    with pytest.raises(UnknownKey):
        v.verify(token, AT + dt.timedelta(seconds=301))  # lifespan over: refetched, k1 gone


def test_remembered_tokens_are_bounded() -> None:
    key = RealmKey("k1")
    v = Verifier(issuer=ISS, client_id=CLIENT, jwks=JwksCache(Keys(key)), algorithms=("RS256",),
                 remember=5)
    for i in range(20):
        v.verify(jwt.encode(claims(jti=str(i)), key.private, algorithm="RS256", headers={"kid": "k1"}), AT)
    assert len(v._seen) == 5


def test_unverified_header_is_routing_only() -> None:
    assert unverified_header("eyJhbGciOiJSUzI1NiJ9.e30.")["alg"] == "RS256"
    for bad in ("", "a.b", "a.b.c.d.e", "!!.e30.x", "W10.e30.x", "e30" * 6000 + ".e30.x"):
        with pytest.raises(Exception) as err:
            unverified_header(bad)
        assert type(err.value).__name__ == "MalformedToken"


def test_from_inventory_derives_issuer_and_needs_an_identity_provider(tmp_path: Path) -> None:
    idp = FakeIdp(tmp_path / "idp")
    try:
        inv = idp.inventory()
        v = Verifier.from_inventory(inv)
        assert v.issuer == f"{idp.url}/realms/socialcare" and v.client_id == "socialcare-app"
        assert v.jwks.source == f"{idp.url}/realms/socialcare/protocol/openid-connect/certs"
        with pytest.raises(WrongIssuer):
            v.verify(idp.token(AT, iss=ISS), AT)
        with pytest.raises(IdentityConfigError):
            Verifier.from_inventory(inv.model_copy(update={"identity_provider": None}))
    finally:
        idp.stop()


def test_settings_file_is_strict_and_never_allows_symmetric_algorithms(tmp_path: Path) -> None:
    assert load_settings(tmp_path) == IdentitySettings()
    (tmp_path / "identity.yaml").write_text("max_auth_age_seconds: 3600\nalgorithms: [PS256]\n")
    s = load_settings(tmp_path)
    assert s.max_auth_age_seconds == 3600 and s.algorithms == ("PS256",)
    for bad in ("algorithms: [HS256]\n", "algorithms: [none]\n", "algorithms: []\n",
                "max_auth_age: 5\n", "jwks_stale_seconds: -1\n"):
        (tmp_path / "identity.yaml").write_text(bad)
        with pytest.raises(IdentityConfigError):
            load_settings(tmp_path)
