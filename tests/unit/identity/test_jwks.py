"""The JWKS cache: lifespan, refetch on unknown kid with a cooldown, the stale window, parsing,
and the HTTPS fetch with the CA passed explicitly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from identity.errors import AlgorithmNotAllowed, IdentityConfigError, KeysUnavailable, UnknownKey
from identity.jwks import JwksCache, https_fetcher, parse_jwks

from .fake_idp import FakeIdp, RealmKey, make_tls

K1, K2 = RealmKey("k1"), RealmKey("k2")
EC = RealmKey("e1", "ES256")


class Source:
    """A JWKS source whose content and reachability the test controls; counts fetches."""

    def __init__(self, *keys: RealmKey) -> None:
        self.keys = list(keys)
        self.up = True
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        if not self.up:
            raise KeysUnavailable("connection refused")
        return json.dumps({"keys": [k.jwk for k in self.keys]}).encode()


def cache(src: Source, **kw: float) -> JwksCache:
    return JwksCache(src, **{"lifespan": 300, "cooldown": 30, "stale": 600, **kw})


def test_keys_are_cached_for_their_lifespan_then_refetched() -> None:
    src = Source(K1)
    c = cache(src)
    assert c.key("k1", "RS256", 1000).key_id == "k1"
    c.key("k1", "RS256", 1299)
    assert src.calls == 1
    c.key("k1", "RS256", 1300)
    assert src.calls == 2


def test_unknown_kid_refetches_at_most_once_per_cooldown_and_picks_up_rotation() -> None:
    src = Source(K1)
    c = cache(src)
    c.key("k1", "RS256", 1000)
    for i in range(100):  # 100 made-up kids over 59.4 s: two cooldown periods
        with pytest.raises(UnknownKey):
            c.key(f"bogus-{i}", "RS256", 1000 + i * 0.6)
    assert src.calls == 2  # the first use, then one refetch at t >= 1030 for the whole flood
    src.keys.append(K2)  # Keycloak rotates in a new key
    with pytest.raises(UnknownKey):
        c.key("k2", "RS256", 1055)  # still inside the cooldown of the refetch: no fetch
    assert src.calls == 2
    assert c.key("k2", "RS256", 1090).key_id == "k2"
    assert src.calls == 3


def test_removed_key_is_dropped_on_refresh() -> None:
    src = Source(K1, K2)
    c = cache(src)
    c.key("k2", "RS256", 0)
    src.keys = [K1]
    c.key("k1", "RS256", 300)  # lifespan over: refetch
    with pytest.raises(UnknownKey):
        c.key("k2", "RS256", 301)


def test_stale_window_when_unreachable_then_deny() -> None:
    src = Source(K1)
    c = cache(src, lifespan=300, cooldown=30, stale=600)
    c.key("k1", "RS256", 0)
    src.up = False
    assert c.key("k1", "RS256", 400).key_id == "k1"  # stale but within the window
    assert c.key("k1", "RS256", 900).key_id == "k1"  # the window's last moment
    assert c.state(900)["stale"] is True
    with pytest.raises(KeysUnavailable, match="beyond the stale window"):
        c.key("k1", "RS256", 901)
    attempts = src.calls
    with pytest.raises(KeysUnavailable):
        c.key("k1", "RS256", 905)  # within the cooldown of the last attempt: no new fetch
    assert src.calls == attempts
    src.up = True
    assert c.key("k1", "RS256", 935).key_id == "k1"  # back: fresh keys again


def test_no_keys_ever_fetched_is_unavailable_and_rate_limited() -> None:
    src = Source(K1)
    src.up = False
    c = cache(src)
    for t in (0, 1, 2):
        with pytest.raises(KeysUnavailable):
            c.key("k1", "RS256", t)
    assert src.calls == 1


def test_key_is_bound_to_its_algorithm() -> None:
    c = cache(Source(K1, EC))
    assert c.key("e1", "ES256", 0).algorithm_name == "ES256"
    with pytest.raises(AlgorithmNotAllowed):
        c.key("k1", "PS256", 0)  # the JWK says RS256
    with pytest.raises(AlgorithmNotAllowed):
        c.key("e1", "RS256", 0)


def test_parse_skips_unusable_private_and_encryption_keys() -> None:
    enc = {**K2.jwk, "kid": "enc", "use": "enc"}
    private = {**K2.jwk, "kid": "priv", "d": "AAAA"}
    decoy = {"kty": "AKP", "kid": "pq", "alg": "ML-DSA-65", "pub": "AAAA"}
    junk = {"kty": "RSA", "kid": "junk", "n": "!!", "e": "AQAB"}
    keys = parse_jwks(json.dumps({"keys": [K1.jwk, enc, private, decoy, junk, "x", {"kty": "RSA"}]}).encode())
    assert set(keys) == {"k1"}
    with pytest.raises(ValueError):
        parse_jwks(b'{"keys": []}')
    with pytest.raises(ValueError):
        parse_jwks(b"[]")


def test_https_fetch_verifies_against_the_given_ca(tmp_path: Path) -> None:
    idp = FakeIdp(tmp_path / "idp")
    try:
        url = idp.issuer() + "/protocol/openid-connect/certs"
        body = https_fetcher(url, ca_file=str(idp.ca_file), timeout=3)()
        assert set(parse_jwks(body)) == {"socialcare-rs256"}
        other_ca, _, _ = make_tls(tmp_path / "other")
        with pytest.raises(KeysUnavailable, match="unreachable"):
            https_fetcher(url, ca_file=str(other_ca), timeout=3)()  # not our CA: refused
        with pytest.raises(KeysUnavailable, match="CA file"):
            https_fetcher(url, ca_file=str(tmp_path / "missing.pem"), timeout=3)()
        with pytest.raises(KeysUnavailable, match="HTTP 404"):
            https_fetcher(idp.url + "/realms/nope/protocol/openid-connect/certs",
                          ca_file=str(idp.ca_file), timeout=3)()
    finally:
        idp.stop()
    with pytest.raises(IdentityConfigError):
        https_fetcher(url.replace("https:", "http:"), ca_file=None, timeout=3)


def test_a_time_before_the_last_fetch_is_fresh_not_stale(caplog: pytest.LogCaptureFixture) -> None:
    src = Source(K1)
    c = cache(src)
    c.key("k1", "RS256", 1000)
    with caplog.at_level("WARNING"):
        for t in (999.5, 990, 1000):  # another thread's earlier ``at``
            assert c.key("k1", "RS256", t).key_id == "k1"
    assert src.calls == 1 and not caplog.records


def test_stale_keys_warn_once_per_attempt_not_per_token(caplog: pytest.LogCaptureFixture) -> None:
    src = Source(K1)
    c = cache(src)
    c.key("k1", "RS256", 0)
    src.up = False
    with caplog.at_level("WARNING", logger="identity.jwks"):
        for i in range(100):
            c.key("k1", "RS256", 300 + i * 0.1)  # 10 s: one attempt (cooldown 30 s)
    stale = [r for r in caplog.records if "stale" in r.getMessage()]
    assert len(stale) == 1 and src.calls == 2
