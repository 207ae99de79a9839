"""Fuzz the token parser and verifier: any string, and tokens correctly signed over arbitrary
headers and claims, give a ``VerifiedToken`` or a ``TokenError`` (a deny); never another
exception. Bound: 300 examples, 2 s each, 60 s per test."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st
from jwt.algorithms import OKPAlgorithm

from identity.errors import TokenError, UnknownKey
from identity.tokens import Verifier, unverified_header

from .runner import fuzz_settings

AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ISSUER, CLIENT = "https://idp.lab/realms/socialcare", "socialcare-app"
KEY = Ed25519PrivateKey.generate()


class OneKey:
    """The JWKS interface with one real Ed25519 key, ``k1``."""

    def key(self, kid: str, alg: str, now: float) -> jwt.PyJWK:
        if kid != "k1":
            raise UnknownKey(f"no key {kid[:20]!r}")
        return jwt.PyJWK(json.loads(OKPAlgorithm.to_jwk(KEY.public_key())) | {"kid": "k1", "alg": "EdDSA"})

    def would_fetch(self, kid: str, now: float) -> bool:
        return False


VERIFIER = Verifier(issuer=ISSUER, client_id=CLIENT, jwks=OneKey(), algorithms=["EdDSA", "RS256"])  # type: ignore[arg-type]

ANY = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12),
                             st.just(10**400), st.just(AT.timestamp())),
                   lambda inner: st.one_of(st.lists(inner, max_size=3),
                                           st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                   max_leaves=8)
NOW = int(AT.timestamp())


@st.composite
def claims(draw) -> dict[str, Any]:
    base: dict[str, Any] = {"exp": NOW + 60, "iat": NOW - 1, "nbf": NOW - 1, "iss": ISSUER, "aud": CLIENT,
                            "azp": CLIENT, "typ": "Bearer", "sub": "u1"}
    for name in draw(st.lists(st.sampled_from(sorted(base)), unique=True, max_size=4)):
        if draw(st.booleans()):
            del base[name]
        else:
            base[name] = draw(ANY)
    return base


@st.composite
def headers(draw) -> dict[str, Any]:
    h: dict[str, Any] = {"kid": draw(st.one_of(st.just("k1"), ANY))}
    if draw(st.booleans()):
        h[draw(st.sampled_from(["crit", "b64", "jku", "x5u", "jwk", "typ", "zip"]))] = draw(ANY)
    return h


def _verify(token: str) -> None:
    with contextlib.suppress(TokenError):
        VERIFIER.verify(token, AT)


@pytest.mark.timeout(60)
@fuzz_settings(150)
@given(header=headers(), body=claims())
def test_signed_tokens_with_arbitrary_headers_and_claims(header: dict, body: dict) -> None:
    _verify(_sign({"alg": "EdDSA", "typ": "JWT"} | header, body))


def _sign(header: dict, body: dict) -> str:
    """A compact JWS over any JSON header and body, really signed with ``KEY`` (built by hand so
    that headers pyjwt would refuse to write still reach the verifier)."""
    def part(doc: dict) -> str:
        return jwt.utils.base64url_encode(json.dumps(doc).encode()).decode()

    signing_input = f"{part(header)}.{part(body)}"
    return f"{signing_input}.{jwt.utils.base64url_encode(KEY.sign(signing_input.encode())).decode()}"


@pytest.mark.timeout(60)
@fuzz_settings(150)
@given(token=st.one_of(st.text(max_size=300),
                       st.text(st.sampled_from(list("eyJ0.-_AaZz9=+/ ")), max_size=300),
                       st.lists(st.binary(max_size=60), min_size=1, max_size=4).map(
                           lambda parts: ".".join(jwt.utils.base64url_encode(p).decode() for p in parts))))
def test_arbitrary_strings(token: str) -> None:
    with contextlib.suppress(TokenError):
        assert isinstance(unverified_header(token), dict)
    _verify(token)


def test_the_unmutated_token_verifies() -> None:
    """The fuzz starts from a token the verifier accepts, so mutations explore real paths."""
    body = {"exp": NOW + 60, "iat": NOW - 1, "iss": ISSUER, "aud": CLIENT, "azp": CLIENT, "typ": "Bearer",
            "sub": "u1"}
    assert VERIFIER.verify(_sign({"alg": "EdDSA", "kid": "k1"}, body), AT).claims["sub"] == "u1"
