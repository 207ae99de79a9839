"""Verification of Keycloak access tokens (``cryptography`` over a cached JWKS).

``Verifier.verify(token, at)`` returns the verified claims or raises a ``TokenError`` naming the
check that refused the token (``KeysUnavailable`` when keys cannot be had). What is checked:

- compact JWS only; no ``crit`` header (Skydd understands no extension, so any is unknown);
- ``alg`` pinned to the configured asymmetric list (never ``none``, never HS*), and equal to the
  algorithm of the key it names; ``jku``/``x5u``/``jwk``/``x5c`` are never read;
- the signature, with the key named by ``kid`` from the configured JWKS only;
- ``iss`` exactly the realm's issuer, ``aud`` containing the client, ``azp`` the client,
  ``typ`` ``Bearer`` (ID and refresh tokens are refused), and ``exp``/``nbf``/``iat`` against the
  injected ``at`` with a small leeway; ``sub`` present.

The token is parsed by Skydd itself (strict compact JWS: base64url without padding, canonical
trailing bits, at most ``MAX_TOKEN_BYTES``) and the signature checked with ``cryptography``
directly; a token seen before is found by its SHA-256 before any parsing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .errors import (
    AlgorithmNotAllowed,
    BadSignature,
    CriticalHeader,
    Expired,
    IdentityConfigError,
    IssuedInFuture,
    MalformedToken,
    MissingClaim,
    NotYetValid,
    TokenError,
    UnknownKey,
    WrongAudience,
    WrongIssuer,
    WrongParty,
    WrongTokenType,
)
from .jwks import JwksCache, https_fetcher
from .settings import IdentitySettings

if TYPE_CHECKING:
    from estate.inventory import Inventory

MAX_TOKEN_BYTES = 16 * 1024
MAX_KID_LENGTH = 256
REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "azp", "typ", "sub")
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def token_digest(token: str | bytes) -> str:
    """A digest that names a token in logs without revealing it."""
    raw = token.encode("utf-8", "replace") if isinstance(token, str) else token
    return "sha256:" + hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class VerifiedToken:
    """An access token whose signature and standard claims have been verified."""

    claims: Mapping[str, Any]
    kid: str
    alg: str
    digest: str

    @cached_property  # the claims never change: worked out once per token
    def username(self) -> str:
        name = self.claims.get("preferred_username")
        return name if isinstance(name, str) and name else str(self.claims["sub"])

    @cached_property  # the claims never change: worked out once per token
    def hsa_id(self) -> str | None:
        value = self.claims.get("hsaId")
        return value if isinstance(value, str) and value else None

    @cached_property  # the claims never change: worked out once per token
    def groups(self) -> tuple[str, ...]:
        value = self.claims.get("groups")
        if not isinstance(value, list):
            return ()
        return tuple(g.removeprefix("/") for g in value if isinstance(g, str))

    @cached_property  # the claims never change: worked out once per token
    def roles(self) -> tuple[str, ...]:
        access = self.claims.get("realm_access")
        roles = access.get("roles") if isinstance(access, dict) else None
        return tuple(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else ()


def issuer_of(url: str, realm: str) -> str:
    return f"{url.rstrip('/')}/realms/{realm}"


#: The last character of an unpadded base64url segment whose length is 2 or 3 (mod 4) carries
#: 4 or 2 unused bits, which must be zero: otherwise several encodings name the same bytes.
_CANONICAL_LAST = {2: frozenset("AQgw"), 3: frozenset("AEIMQUYcgkosw048")}
MIN_RSA_BITS = 2048
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}


def b64url_decode(segment: str, what: str) -> bytes:
    """Decode one segment of a compact JWS (already matched by the strict token pattern):
    unpadded base64url in its canonical form only."""
    rem = len(segment) % 4
    if rem == 1 or (rem and segment[-1] not in _CANONICAL_LAST[rem]):
        raise MalformedToken(f"the token {what} is not canonical base64url")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as err:
        raise MalformedToken(f"the token {what} is not base64url") from err


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise MalformedToken(f"the token {what} is not base64url JSON") from err
    if not isinstance(doc, dict):
        raise MalformedToken(f"the token {what} is not a JSON object")
    return doc


def unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header of a compact JWS, for routing only (nothing in it is trusted)."""
    if not isinstance(token, str) or not token:
        raise MalformedToken("no token")
    if len(token) > MAX_TOKEN_BYTES:
        raise MalformedToken(f"the token is longer than {MAX_TOKEN_BYTES} bytes")
    if not _COMPACT_JWS.fullmatch(token):
        raise MalformedToken("not a compact JWS (three dot-separated base64url parts)")
    return _json_object(b64url_decode(token.split(".", 1)[0], "header"), "header")


def signature_valid(key: Any, alg: str, signing_input: bytes, signature: bytes) -> bool:
    """Whether ``signature`` over ``signing_input`` verifies under ``key`` (a ``PyJWK`` bound to
    ``alg``) with ``cryptography``. The key's type (and curve) must be the one ``alg`` names,
    else ``AlgorithmNotAllowed``: a key is never used with another algorithm."""
    if getattr(key, "algorithm_name", None) != alg:
        raise AlgorithmNotAllowed(f"the key does not sign with {alg}")
    public = key.key
    family, bits = alg[:2], alg[2:]
    try:
        if family in ("RS", "PS") and bits in _HASHES:
            if not isinstance(public, rsa.RSAPublicKey):
                raise AlgorithmNotAllowed(f"{alg} needs an RSA key")
            if public.key_size < MIN_RSA_BITS:
                raise AlgorithmNotAllowed(f"the RSA key has {public.key_size} bits, fewer than "
                                          f"{MIN_RSA_BITS}")
            digest = _HASHES[bits]()
            pad = padding.PKCS1v15() if family == "RS" else padding.PSS(
                mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            public.verify(signature, signing_input, pad, digest)
        elif alg in _CURVES:
            if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != _CURVES[alg]:
                raise AlgorithmNotAllowed(f"{alg} needs a {_CURVES[alg]} key")
            size = (public.curve.key_size + 7) // 8
            if len(signature) != 2 * size:  # raw r || s (JWS), never DER
                return False
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            public.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(_HASHES[bits]()))
        elif alg == "EdDSA":
            if not isinstance(public, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
                raise AlgorithmNotAllowed("EdDSA needs an Ed25519 or Ed448 key")
            public.verify(signature, signing_input)
        else:
            raise AlgorithmNotAllowed(f"algorithm {alg[:20]!r} is not supported")
    except InvalidSignature:
        return False
    return True


class Verifier:
    """Verifies access tokens of one realm for one client.

    A token whose signature and static claims verified is remembered (by its SHA-256, at most
    ``remember`` tokens, oldest first out), so the same token presented again skips
    the signature check. Everything that depends on time is checked on every call, and the
    remembered token is used only while its key is still in the (fresh or stale-but-allowed) JWKS.
    """

    def __init__(self, *, issuer: str, client_id: str, jwks: JwksCache,
                 algorithms: Sequence[str], leeway: float = 10, remember: int = 10_000) -> None:
        self.issuer, self.client_id, self.jwks = issuer, client_id, jwks
        self.algorithms = tuple(algorithms)
        self.leeway = leeway
        self.remember = remember
        self._seen: OrderedDict[str, VerifiedToken] = OrderedDict()
        self._seen_lock = threading.Lock()

    @classmethod
    def from_inventory(cls, inventory: Inventory, settings: IdentitySettings | None = None,
                       ) -> Verifier:
        """The verifier for the inventory's identity provider (issuer, JWKS URL, CA)."""
        idp = inventory.identity_provider
        if idp is None:
            raise IdentityConfigError("the inventory names no identity_provider")
        settings = settings or IdentitySettings()
        issuer = issuer_of(idp.url, idp.realm)
        jwks_url = f"{issuer}/protocol/openid-connect/certs"
        ca_file = str(Path(idp.ca_file)) if idp.ca_file else None
        fetch = https_fetcher(jwks_url, ca_file=ca_file, timeout=settings.jwks_timeout_seconds)
        cache = JwksCache(fetch, lifespan=settings.jwks_lifespan_seconds,
                          cooldown=settings.jwks_cooldown_seconds,
                          stale=settings.jwks_stale_seconds, source=jwks_url)
        return cls(issuer=issuer, client_id=settings.client_id, jwks=cache,
                   algorithms=settings.algorithms, leeway=settings.leeway_seconds)

    def _routing(self, header: Mapping[str, Any]) -> tuple[str, str]:
        if "crit" in header or "b64" in header:
            raise CriticalHeader("the token names critical header extensions Skydd does not know")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise AlgorithmNotAllowed(f"algorithm {str(alg)[:20]!r} is not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
            raise UnknownKey("the token names no usable kid")
        return kid, alg

    def _remembered(self, token: str) -> tuple[str, VerifiedToken | None]:
        if not isinstance(token, str) or not token:
            raise MalformedToken("no token")
        if len(token) > MAX_TOKEN_BYTES:
            raise MalformedToken(f"the token is longer than {MAX_TOKEN_BYTES} bytes")
        digest = token_digest(token)
        return digest, self._seen.get(digest)

    def would_fetch(self, token: str, at: datetime) -> bool:
        """Whether verifying ``token`` at ``at`` may go to the network (JWKS refetch)."""
        now = at.timestamp()
        try:
            if not self.jwks.may_fetch(now):  # within the cooldown nothing is ever fetched
                return False
            _, seen = self._remembered(token)
            kid = seen.kid if seen is not None else self._routing(unverified_header(token))[0]
        except TokenError:
            return False
        return self.jwks.would_fetch(kid, now)

    def verify(self, token: str, at: datetime) -> VerifiedToken:
        """Verify ``token`` at time ``at``; raises ``TokenError`` or ``KeysUnavailable``."""
        now = at.timestamp()
        digest, seen = self._remembered(token)
        if seen is not None:  # the same bytes verified before: only what can change is checked
            self.jwks.key(seen.kid, seen.alg, now)  # still a key of the realm, keys not too stale
            self._check_times(seen.claims, now)
            return seen
        kid, alg = self._routing(unverified_header(token))
        key = self.jwks.key(kid, alg, now)
        signing_input, _, signature_part = token.rpartition(".")
        payload = b64url_decode(signing_input.partition(".")[2], "payload")
        signature = b64url_decode(signature_part, "signature")
        if not signature_valid(key, alg, signing_input.encode("ascii"), signature):
            raise BadSignature("the signature does not verify")
        claims = _json_object(payload, "payload")
        self._check_claims(claims)
        self._check_times(claims, now)
        verified = VerifiedToken(claims=MappingProxyType(claims), kid=kid, alg=alg, digest=digest)
        if self.remember:
            with self._seen_lock:
                self._seen[digest] = verified
                while len(self._seen) > self.remember:
                    self._seen.popitem(last=False)
        return verified

    def _check_claims(self, claims: Mapping[str, Any]) -> None:
        """The signed claims that do not depend on time, in PyJWT's order and with its rules
        (required claims present and not null; ``iss`` exact; ``aud`` a string or a list of
        strings containing the client; ``sub`` and ``jti`` strings), then ``azp`` and ``typ``."""
        for name in REQUIRED_CLAIMS:
            if claims.get(name) is None or (name == "aud" and not claims[name]):
                raise MissingClaim(f"the token has no {name!r} claim")
        if claims["iss"] != self.issuer:  # exact: never a prefix or a substring
            raise WrongIssuer("the token's issuer is not the realm's")
        aud = claims["aud"]
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise WrongAudience("the token's audience is neither a string nor a list of strings")
        if self.client_id not in audiences:
            raise WrongAudience(f"the token's audience does not include {self.client_id!r}")
        if not isinstance(claims["sub"], str):
            raise MalformedToken("claim 'sub' is not a string")
        if "jti" in claims and not isinstance(claims["jti"], str):
            raise MalformedToken("claim 'jti' is not a string")
        if claims["azp"] != self.client_id:
            raise WrongParty(f"the token was issued to {str(claims.get('azp'))[:64]!r}, "
                             f"not {self.client_id!r}")
        if claims["typ"] != "Bearer":
            raise WrongTokenType(f"not an access token (typ {str(claims.get('typ'))[:20]!r})")

    def _check_times(self, claims: Mapping[str, Any], now: float) -> None:
        for name in ("exp", "iat", "nbf"):
            value = claims.get(name)
            if name in claims and (isinstance(value, bool) or not isinstance(value, (int, float))
                                   or (isinstance(value, float) and not math.isfinite(value))):
                raise MalformedToken(f"claim {name!r} is not a finite number")
        if now >= claims["exp"] + self.leeway:
            raise Expired("the token has expired")
        if "nbf" in claims and now < claims["nbf"] - self.leeway:
            raise NotYetValid("the token is not valid yet")
        if now < claims["iat"] - self.leeway:
            raise IssuedInFuture("the token was issued in the future")
