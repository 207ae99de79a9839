"""The attack suite on the token verifier, against a realm JWKS served over real HTTPS on
loopback (``FakeIdp``). Each attack must be refused with the cause that names it, and must not
make the verifier fetch anything it should not."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from identity.decision import AccessDecision, Policy
from identity.errors import (
    AlgorithmNotAllowed,
    BadSignature,
    CriticalHeader,
    Expired,
    IssuedInFuture,
    KeysUnavailable,
    MalformedToken,
    NotYetValid,
    TokenError,
    UnknownKey,
    WrongAudience,
    WrongIssuer,
    WrongParty,
    WrongTokenType,
)
from identity.settings import IdentitySettings
from identity.tokens import Verifier
from identity.training import TrainingStatus

from .fake_idp import FakeIdp, RealmKey

AT = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
SETTINGS = IdentitySettings(jwks_lifespan_seconds=300, jwks_cooldown_seconds=30,
                            jwks_stale_seconds=600, leeway_seconds=10)


@pytest.fixture
def verifier(idp: FakeIdp) -> Verifier:
    return Verifier.from_inventory(idp.inventory(), SETTINGS)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], sign: Any) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def test_the_genuine_token_verifies(idp: FakeIdp, verifier: Verifier) -> None:
    token = verifier.verify(idp.token(AT), AT)
    assert token.username == "anna.torsby" and token.hsa_id == "SE2321000016-T001"
    assert token.groups == ("torsby",) and "socialcare-user" in token.roles


def test_alg_none_is_refused_without_fetching(idp: FakeIdp, verifier: Verifier) -> None:
    before = idp.jwks_requests()
    for alg in ("none", "None", "NONE"):
        token = forge({"alg": alg, "typ": "JWT", "kid": "socialcare-rs256"}, idp.claims(AT),
                      lambda _: b"")
        with pytest.raises(AlgorithmNotAllowed):
            verifier.verify(token, AT)
        with pytest.raises(AlgorithmNotAllowed):
            verifier.verify(token[: token.rindex(".") + 1] + "", AT)  # empty signature part
    assert idp.jwks_requests() == before


def test_hs256_signed_with_the_realms_public_key_is_refused(idp: FakeIdp, verifier: Verifier) -> None:
    key = idp.keys["socialcare"][0]
    for secret in (key.public_pem(), json.dumps(key.jwk).encode(), key.jwk["n"].encode()):
        for alg, digest in (("HS256", hashlib.sha256), ("HS512", hashlib.sha512)):
            token = forge({"alg": alg, "typ": "JWT", "kid": key.kid}, idp.claims(AT),
                          lambda m, s=secret, d=digest: hmac.new(s, m, d).digest())
            with pytest.raises(AlgorithmNotAllowed):
                verifier.verify(token, AT)


def test_alg_confusion_between_allowed_algorithms_is_refused(idp: FakeIdp, verifier: Verifier) -> None:
    key = idp.keys["socialcare"][0]
    token = jwt.encode(idp.claims(AT), key.private, algorithm="PS256", headers={"kid": key.kid})
    with pytest.raises(AlgorithmNotAllowed):  # PS256 is allowed, but this key is an RS256 key
        verifier.verify(token, AT)


def test_unknown_kid_flood_fetches_at_most_once_per_cooldown(idp: FakeIdp, verifier: Verifier) -> None:
    verifier.verify(idp.token(AT), AT)  # warm
    start = idp.jwks_requests()
    attacker = RealmKey("attacker")
    for i in range(200):
        at = AT + dt.timedelta(seconds=i * 0.1)  # 200 tokens within 20 s: one cooldown
        token = idp.mint(idp.claims(at), key=attacker,
                         headers={"kid": f"rotated-{i}"})
        with pytest.raises(UnknownKey):
            verifier.verify(token, at)
    assert idp.jwks_requests() - start <= 1
    later = AT + dt.timedelta(seconds=31)
    for i in range(50):
        with pytest.raises(UnknownKey):
            verifier.verify(idp.mint(idp.claims(later), key=attacker, headers={"kid": f"x{i}"}), later)
    assert idp.jwks_requests() - start <= 2
    assert verifier.verify(idp.token(later), later).username == "anna.torsby"


@pytest.mark.parametrize("kid", ["../../../../etc/passwd", "socialcare-rs256/../../certs",
                                 "%2e%2e%2fadmin", "/realms/other/protocol/openid-connect/certs",
                                 "socialcare-rs256?x=1", "socialcare-rs256\x00", "C:\\keys\\k"])
def test_kid_with_path_characters_is_only_an_unknown_kid(idp: FakeIdp, verifier: Verifier, kid: str) -> None:
    paths_before = set(idp.requests)
    token = idp.mint(idp.claims(AT), key=idp.keys["socialcare"][0], headers={"kid": kid})
    with pytest.raises(UnknownKey):
        verifier.verify(token, AT)
    assert set(idp.requests) <= paths_before | {idp.jwks_path("socialcare")}


def test_jku_x5u_and_embedded_jwk_are_ignored(idp: FakeIdp, verifier: Verifier) -> None:
    attacker = RealmKey("attacker-jku")
    jku = f"{idp.url}/attacker/jwks.json"
    headers = {"jku": jku, "x5u": f"{idp.url}/attacker/cert.pem", "jwk": attacker.jwk}
    with pytest.raises(UnknownKey):
        verifier.verify(idp.mint(idp.claims(AT), key=attacker, headers=headers), AT)
    with pytest.raises(BadSignature):  # the realm's kid, the attacker's key
        verifier.verify(idp.mint(idp.claims(AT), key=attacker,
                                 headers={**headers, "kid": "socialcare-rs256"}), AT)
    assert not [p for p in idp.requests if p.startswith("/attacker")]


def test_unknown_crit_is_refused(idp: FakeIdp, verifier: Verifier) -> None:
    for crit in (["urn:example:unknown"], ["b64"], [], "exp"):
        token = idp.mint(idp.claims(AT), headers={"crit": crit, "urn:example:unknown": 1})
        with pytest.raises((CriticalHeader, MalformedToken)):
            verifier.verify(token, AT)


def test_tampered_payload_is_refused(idp: FakeIdp, verifier: Verifier) -> None:
    header, _, sig = idp.token(AT).split(".")
    payload = b64(json.dumps(idp.claims(AT, groups=["torsby", "sunne"])).encode())
    with pytest.raises(BadSignature):
        verifier.verify(f"{header}.{payload}.{sig}", AT)


def test_expired_and_not_yet_valid(idp: FakeIdp, verifier: Verifier) -> None:
    now = int(AT.timestamp())
    with pytest.raises(Expired):
        verifier.verify(idp.token(AT, exp=now - 11), AT)
    verifier.verify(idp.token(AT, exp=now - 9), AT)  # within the 10 s leeway
    with pytest.raises(NotYetValid):
        verifier.verify(idp.token(AT, nbf=now + 60), AT)
    with pytest.raises(IssuedInFuture):
        verifier.verify(idp.token(AT, iat=now + 60), AT)
    token = idp.token(AT)
    verifier.verify(token, AT)
    with pytest.raises(Expired):  # the same token, remembered, still expires
        verifier.verify(token, AT + dt.timedelta(seconds=320))
    with pytest.raises(MalformedToken):
        verifier.verify(idp.token(AT, exp=str(now + 60)), AT)
    with pytest.raises(MalformedToken):  # JSON's NaN/Infinity would never expire
        verifier.verify(idp.token(AT, exp=float("inf")), AT)
    with pytest.raises(MalformedToken):
        verifier.verify(idp.token(AT, nbf=float("nan")), AT)


@pytest.mark.parametrize("iss", ["https://evil.example/realms/socialcare",
                                 "{issuer}-evil", "{issuer}/", "{issuer}/../other",
                                 "{url}/realms/social", "{url}/realms/socialcare2",
                                 "{url}/realms/other"])
def test_wrong_or_prefix_sharing_issuer(idp: FakeIdp, verifier: Verifier, iss: str) -> None:
    iss = iss.format(issuer=idp.issuer(), url=idp.url)
    with pytest.raises(WrongIssuer):
        verifier.verify(idp.token(AT, iss=iss), AT)


def test_wrong_audience_and_party(idp: FakeIdp, verifier: Verifier) -> None:
    with pytest.raises(WrongAudience):
        verifier.verify(idp.token(AT, aud=["account"]), AT)  # Keycloak's default, no mapper
    with pytest.raises(WrongAudience):
        verifier.verify(idp.token(AT, aud="socialcare-app-evil"), AT)
    with pytest.raises(WrongParty):
        verifier.verify(idp.token(AT, azp="skydd-dashboard"), AT)
    verifier.verify(idp.token(AT, aud="socialcare-app"), AT)  # a plain string audience is fine


def test_id_and_refresh_tokens_are_not_access_tokens(idp: FakeIdp, verifier: Verifier) -> None:
    id_token = idp.token(AT, typ="ID", aud="socialcare-app", nonce="n-1", at_hash="x")
    with pytest.raises(WrongTokenType):
        verifier.verify(id_token, AT)
    refresh_rs = idp.token(AT, typ="Refresh", aud="socialcare-app")
    with pytest.raises(WrongTokenType):
        verifier.verify(refresh_rs, AT)
    # Keycloak signs refresh tokens with the realm's HMAC key (HS512), audience = the issuer
    refresh = forge({"alg": "HS512", "typ": "JWT", "kid": "hmac-kid"},
                    idp.claims(AT, typ="Refresh", aud=idp.issuer()),
                    lambda m: hmac.new(b"realm-hmac-secret", m, hashlib.sha512).digest())
    with pytest.raises(AlgorithmNotAllowed):
        verifier.verify(refresh, AT)
    with pytest.raises(TokenError):
        verifier.verify(idp.token(AT, typ=None), AT)


def test_token_from_another_realm(idp: FakeIdp, verifier: Verifier) -> None:
    other = idp.token(AT, realm="other")
    with pytest.raises(UnknownKey):
        verifier.verify(other, AT)
    forged_iss = idp.mint(idp.claims(AT), realm="other")  # the other realm's key, our issuer
    with pytest.raises(UnknownKey):
        verifier.verify(forged_iss, AT)
    other_verifier = Verifier.from_inventory(idp.inventory(realm="other"), SETTINGS)
    assert other_verifier.verify(other, AT).username == "anna.torsby"
    with pytest.raises(UnknownKey):
        other_verifier.verify(idp.token(AT), AT)


class Trained:
    def training_status(self, username: str, hsa_id: str | None, at: dt.datetime) -> TrainingStatus:
        return TrainingStatus.ok()


def test_acr_and_amr_attacks_are_denied_by_the_decision(idp: FakeIdp, verifier: Verifier) -> None:
    decider = AccessDecision(verifier, Policy(municipality_groups=frozenset({"torsby"})), Trained())
    assert decider.decide(idp.token(AT), AT).allow
    cases = {"acr": [dict(acr=None), dict(acr="1"), dict(acr="0"), dict(acr=2),
                     dict(acr="eid-card-otp-x"), dict(acr=["eid-card-otp"])],
             "amr": [dict(amr=["pwd", "otp"]), dict(amr=["otp"]), dict(amr=["sc"]),
                     dict(amr="sc otp"), dict(amr=None)]}
    for code, variants in cases.items():
        for claims in variants:
            decision = decider.decide(idp.token(AT, **claims), AT)
            assert not decision.allow and decision.codes == (code,), (claims, decision.codes)


def test_keycloak_unreachable_within_and_beyond_the_stale_window(tmp_path: Path) -> None:
    own = FakeIdp(tmp_path / "idp")
    verifier = Verifier.from_inventory(own.inventory(), SETTINGS)
    decider = AccessDecision(verifier, Policy(municipality_groups=frozenset({"torsby"})), Trained())
    assert decider.decide(own.token(AT), AT).allow
    own.stop()  # the port closes: connection refused
    within = AT + dt.timedelta(seconds=300 + 600 - 60)
    assert decider.decide(own.token(within), within).allow
    beyond = AT + dt.timedelta(seconds=300 + 600 + 1)
    with pytest.raises(KeysUnavailable):
        verifier.verify(own.token(beyond), beyond)
    decision = decider.decide(own.token(beyond), beyond)
    assert not decision.allow and decision.reasons[0].cause == "keys_unavailable"


def test_keycloak_answering_errors_counts_as_unreachable(tmp_path: Path) -> None:
    own = FakeIdp(tmp_path / "idp")
    try:
        own.failing = True
        verifier = Verifier.from_inventory(own.inventory(), SETTINGS)
        with pytest.raises(KeysUnavailable, match="503"):
            verifier.verify(own.token(AT), AT)
    finally:
        own.stop()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.one_of(st.text(max_size=300), st.from_regex(r"[A-Za-z0-9_=.\-]{0,200}", fullmatch=True),
                      st.lists(st.text(max_size=40), min_size=3, max_size=5).map(".".join)))
def test_junk_is_a_token_error_never_a_crash(verifier: Verifier, junk: str) -> None:
    with pytest.raises((TokenError, KeysUnavailable)):
        verifier.verify(junk, AT)


def _resign(idp: FakeIdp, header_part: str, payload_part: str) -> str:
    """A compact JWS over exactly these (possibly odd) segments, genuinely signed with the realm key."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    signing_input = f"{header_part}.{payload_part}"
    sig = idp.keys["socialcare"][0].private.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(sig)}"


def test_non_canonical_base64url_is_refused_even_when_signed(idp: FakeIdp, verifier: Verifier) -> None:
    header = b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "socialcare-rs256"}).encode())
    payloads = [b64(json.dumps(idp.claims(AT, jti="j" * n)).encode()) for n in range(3)]
    for payload in [p for p in payloads if len(p) % 4 in (2, 3)]:  # both kinds of spare bits
        assert verifier.verify(_resign(idp, header, payload), AT).username == "anna.torsby"
        _refuse_spellings(idp, verifier, header, payload)
    assert {len(p) % 4 for p in payloads} >= {2, 3}


def _refuse_spellings(idp: FakeIdp, verifier: Verifier, header: str, payload: str) -> None:
    rem = len(payload) % 4
    # the last character's unused low bits set: decodes to the same bytes, but a second spelling
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    odd = payload[:-1] + alphabet[alphabet.index(payload[-1]) + 1]
    with pytest.raises(MalformedToken, match="canonical"):
        verifier.verify(_resign(idp, header, odd), AT)
    for bad in (payload + "=" * (4 - rem), payload + "A", payload[:-1] + "+", payload[:-1] + "/"):
        with pytest.raises(MalformedToken):  # padding, a dangling sextet, the non-url alphabet
            verifier.verify(_resign(idp, header, bad), AT)
    token = _resign(idp, header, payload)
    for bad in (token + ".", token + "=", "." + token, token.replace(".", "..", 1), " " + token):
        with pytest.raises(MalformedToken):
            verifier.verify(bad, AT)


def test_oversized_tokens_are_refused_before_hashing_or_parsing(idp: FakeIdp, verifier: Verifier) -> None:
    token = idp.token(AT, padding="x" * 20_000)
    with pytest.raises(MalformedToken, match="longer than"):
        verifier.verify(token, AT)


def test_ecdsa_psychic_and_der_signatures_are_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    own = FakeIdp(tmp_path / "idp")
    try:
        ec_key = RealmKey("socialcare-es256", "ES256")
        own.keys["socialcare"] = [ec_key]
        v = Verifier.from_inventory(own.inventory(), SETTINGS)
        header = {"alg": "ES256", "typ": "JWT", "kid": ec_key.kid}
        good = forge(header, own.claims(AT), lambda m: _raw(ec_key.private.sign(m, ec.ECDSA(hashes.SHA256()))))
        assert v.verify(good, AT).alg == "ES256"
        for sign in (lambda m: b"\0" * 64,                        # r = s = 0 (CVE-2022-21449 class)
                     lambda m: ec_key.private.sign(m, ec.ECDSA(hashes.SHA256())),  # DER, not raw
                     lambda m: b"\0" * 32 + _raw(ec_key.private.sign(m, ec.ECDSA(hashes.SHA256())))[32:],
                     lambda m: b"\xff" * 64):                      # r, s beyond the group order
            with pytest.raises(BadSignature):
                v.verify(forge(header, own.claims(AT), sign), AT)
    finally:
        own.stop()


def _raw(der: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def test_a_short_rsa_key_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    own = FakeIdp(tmp_path / "idp")
    try:
        weak = RealmKey("socialcare-rs256")
        weak.private = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        weak.jwk = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(weak.private.public_key())),
                    "kid": weak.kid, "alg": "RS256", "use": "sig"}
        own.keys["socialcare"] = [weak]
        v = Verifier.from_inventory(own.inventory(), SETTINGS)
        with pytest.raises(AlgorithmNotAllowed, match="1024 bits"):
            v.verify(own.token(AT), AT)
    finally:
        own.stop()


def test_huge_integer_times_are_judged_not_crashed(idp: FakeIdp, verifier: Verifier) -> None:
    now = int(AT.timestamp())
    with pytest.raises(IssuedInFuture):
        verifier.verify(idp.token(AT, iat=10**400), AT)
    with pytest.raises(NotYetValid):
        verifier.verify(idp.token(AT, nbf=10**400), AT)
    with pytest.raises(Expired):
        verifier.verify(idp.token(AT, exp=-(10**400)), AT)
    decider = AccessDecision(verifier, Policy(municipality_groups=frozenset({"torsby"})), Trained())
    assert decider.decide(idp.token(AT, auth_time=10**400), AT).codes == ("auth_age",)
    assert verifier.verify(idp.token(AT, exp=now + 60), AT).claims["exp"] == now + 60


def test_a_remembered_token_is_found_before_any_parsing(idp: FakeIdp, verifier: Verifier,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import identity.tokens as tokens

    token = idp.token(AT, jti="remembered")
    first = verifier.verify(token, AT)

    def no_parse(_: str) -> None:
        raise AssertionError("a remembered token was parsed again")

    monkeypatch.setattr(tokens, "unverified_header", no_parse)
    assert verifier.verify(token, AT + dt.timedelta(seconds=5)) is first
    with pytest.raises(Expired):  # time is still judged on every call
        verifier.verify(token, AT + dt.timedelta(seconds=400))
