"""Verification of Keycloak access tokens (pyjwt over a cached JWKS).

``Verifier.verify(token, at)`` returns the verified claims or raises a ``TokenError`` naming the
check that refused the token (``KeysUnavailable`` when keys cannot be had). What is checked:

- compact JWS only; no ``crit`` header (Skydd understands no extension, so any is unknown);
- ``alg`` pinned to the configured asymmetric list (never ``none``, never HS*), and equal to the
  algorithm of the key it names; ``jku``/``x5u``/``jwk``/``x5c`` are never read;
- the signature, with the key named by ``kid`` from the configured JWKS only;
- ``iss`` exactly the realm's issuer, ``aud`` containing the client, ``azp`` the client,
  ``typ`` ``Bearer`` (ID and refresh tokens are refused), and ``exp``/``nbf``/``iat`` against the
  injected ``at`` with a small leeway; ``sub`` present.
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import jwt
from jwt import exceptions as jwt_errors

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

    @property
    def username(self) -> str:
        name = self.claims.get("preferred_username")
        return name if isinstance(name, str) and name else str(self.claims["sub"])

    @property
    def hsa_id(self) -> str | None:
        value = self.claims.get("hsaId")
        return value if isinstance(value, str) and value else None

    @property
    def groups(self) -> tuple[str, ...]:
        value = self.claims.get("groups")
        if not isinstance(value, list):
            return ()
        return tuple(g.removeprefix("/") for g in value if isinstance(g, str))

    @property
    def roles(self) -> tuple[str, ...]:
        access = self.claims.get("realm_access")
        roles = access.get("roles") if isinstance(access, dict) else None
        return tuple(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else ()


def issuer_of(url: str, realm: str) -> str:
    return f"{url.rstrip('/')}/realms/{realm}"


def _b64json(segment: str) -> Any:
    pad = "=" * (-len(segment) % 4)
    try:
        return json.loads(base64.urlsafe_b64decode(segment + pad))
    except (binascii.Error, ValueError, RecursionError) as err:
        raise MalformedToken("the token header is not base64url JSON") from err


def unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header of a compact JWS, for routing only (nothing in it is trusted)."""
    if not isinstance(token, str) or not token:
        raise MalformedToken("no token")
    if len(token) > MAX_TOKEN_BYTES:
        raise MalformedToken(f"the token is longer than {MAX_TOKEN_BYTES} bytes")
    if not _COMPACT_JWS.fullmatch(token):
        raise MalformedToken("not a compact JWS (three dot-separated base64url parts)")
    header = _b64json(token.split(".", 1)[0])
    if not isinstance(header, dict):
        raise MalformedToken("the token header is not a JSON object")
    return header


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
    def from_inventory(cls, inventory: "Inventory", settings: IdentitySettings | None = None,
                       ) -> "Verifier":
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

    def _routing(self, token: str) -> tuple[str, str]:
        header = unverified_header(token)
        if "crit" in header or "b64" in header:
            raise CriticalHeader("the token names critical header extensions Skydd does not know")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise AlgorithmNotAllowed(f"algorithm {str(alg)[:20]!r} is not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
            raise UnknownKey("the token names no usable kid")
        return kid, alg

    def would_fetch(self, token: str, at: datetime) -> bool:
        """Whether verifying ``token`` at ``at`` may go to the network (JWKS refetch)."""
        try:
            kid, _ = self._routing(token)
        except TokenError:
            return False
        return self.jwks.would_fetch(kid, at.timestamp())

    def verify(self, token: str, at: datetime) -> VerifiedToken:
        """Verify ``token`` at time ``at``; raises ``TokenError`` or ``KeysUnavailable``."""
        kid, alg = self._routing(token)
        key = self.jwks.key(kid, alg, at.timestamp())
        digest = token_digest(token)
        seen = self._seen.get(digest)
        if seen is not None and seen.kid == kid and seen.alg == alg:
            self._check_times(seen.claims, at.timestamp())
            return seen
        try:
            claims = jwt.decode(
                token, key, algorithms=[alg], issuer=self.issuer, audience=self.client_id,
                options={"verify_signature": True, "verify_exp": False, "verify_nbf": False,
                         "verify_iat": False, "verify_iss": True, "verify_aud": True,
                         "strict_aud": False, "require": list(REQUIRED_CLAIMS)})
        except jwt_errors.InvalidSignatureError as err:
            raise BadSignature("the signature does not verify") from err
        except jwt_errors.InvalidAlgorithmError as err:
            raise AlgorithmNotAllowed(str(err)) from err
        except jwt_errors.MissingRequiredClaimError as err:
            raise MissingClaim(f"the token has no {err.claim!r} claim") from err
        except jwt_errors.InvalidIssuerError as err:
            raise WrongIssuer("the token's issuer is not the realm's") from err
        except jwt_errors.InvalidAudienceError as err:
            raise WrongAudience(f"the token's audience does not include {self.client_id!r}") from err
        except jwt_errors.InvalidTokenError as err:
            raise MalformedToken(f"the token cannot be decoded: {err}") from err
        if claims.get("iss") != self.issuer:  # belt and braces: exact, never prefix or substring
            raise WrongIssuer("the token's issuer is not the realm's")
        if claims.get("azp") != self.client_id:
            raise WrongParty(f"the token was issued to {str(claims.get('azp'))[:64]!r}, "
                             f"not {self.client_id!r}")
        if claims.get("typ") != "Bearer":
            raise WrongTokenType(f"not an access token (typ {str(claims.get('typ'))[:20]!r})")
        self._check_times(claims, at.timestamp())
        verified = VerifiedToken(claims=MappingProxyType(claims), kid=kid, alg=alg, digest=digest)
        if self.remember:
            with self._seen_lock:
                self._seen[digest] = verified
                while len(self._seen) > self.remember:
                    self._seen.popitem(last=False)
        return verified

    def _check_times(self, claims: Mapping[str, Any], now: float) -> None:
        for name in ("exp", "iat", "nbf"):
            value = claims.get(name)
            if name in claims and (isinstance(value, bool) or not isinstance(value, (int, float))
                                   or not math.isfinite(value)):
                raise MalformedToken(f"claim {name!r} is not a finite number")
        if now >= claims["exp"] + self.leeway:
            raise Expired("the token has expired")
        if "nbf" in claims and now < claims["nbf"] - self.leeway:
            raise NotYetValid("the token is not valid yet")
        if now < claims["iat"] - self.leeway:
            raise IssuedInFuture("the token was issued in the future")
