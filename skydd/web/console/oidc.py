"""The console's OIDC client: the authorization request (code + PKCE S256 + state + nonce), the
code exchange with the client secret, and the verification of both tokens.

The access token is verified by ``identity``'s ``Verifier`` for the console client (signature
against the realm's JWKS, issuer, audience, ``azp``, ``typ``, expiry). The ID token is checked
with the same JWKS cache: signature, issuer, audience, expiry, ``nonce`` and the same ``sub``.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import httpx

from identity.errors import IdentityError, TokenError
from identity.tokens import (
    VerifiedToken,
    Verifier,
    _json_object,
    b64url_decode,
    signature_valid,
    unverified_header,
)

TIMEOUT_SECONDS = 15.0


class LoginError(Exception):
    """The login cannot complete; the message says why, for the 403 page."""


@dataclass(frozen=True)
class Provider:
    issuer: str
    client_id: str
    client_secret: str
    redirect_uri: str
    ca_file: str | None
    verifier: Verifier
    acr: str

    @property
    def endpoint(self) -> str:
        return f"{self.issuer}/protocol/openid-connect"

    def authorize_url(self, state: str, nonce: str, challenge: str) -> str:
        query = {"client_id": self.client_id, "redirect_uri": self.redirect_uri,
                 "response_type": "code", "scope": "openid", "state": state, "nonce": nonce,
                 "code_challenge": challenge, "code_challenge_method": "S256",
                 "acr_values": self.acr, "prompt": "login"}
        return f"{self.endpoint}/auth?{urlencode(query)}"

    def logout_url(self, id_token: str, post_logout: str) -> str:
        query = {"id_token_hint": id_token, "post_logout_redirect_uri": post_logout,
                 "client_id": self.client_id}
        return f"{self.endpoint}/logout?{urlencode(query)}"

    def exchange(self, code: str, verifier: str) -> dict[str, Any]:
        """Trade the authorization code (with the PKCE verifier and the client secret) for tokens."""
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.redirect_uri,
                "code_verifier": verifier}
        try:
            verify = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True
            with httpx.Client(verify=verify, timeout=TIMEOUT_SECONDS, trust_env=False) as client:
                r = client.post(f"{self.endpoint}/token", data=data,
                                auth=(self.client_id, self.client_secret))
        except (httpx.HTTPError, OSError, ssl.SSLError) as err:
            raise LoginError(f"the identity provider cannot be reached ({type(err).__name__})") from err
        if r.status_code != 200:
            try:
                why = str(r.json().get("error_description") or r.json().get("error"))[:200]
            except ValueError:
                why = f"HTTP {r.status_code}"
            raise LoginError(f"the identity provider refused the code exchange: {why}")
        tokens = r.json()
        if not isinstance(tokens, dict) or not isinstance(tokens.get("access_token"), str) \
                or not isinstance(tokens.get("id_token"), str):
            raise LoginError("the identity provider's answer holds no access and ID token")
        return tokens

    def verify(self, tokens: Mapping[str, Any], nonce: str, at: datetime
               ) -> tuple[VerifiedToken, dict[str, Any]]:
        """The verified access token and ID token claims; ``LoginError`` says what is wrong."""
        try:
            access = self.verifier.verify(tokens["access_token"], at)
            id_claims = self.verify_id_token(tokens["id_token"], nonce, at)
        except (IdentityError, TokenError) as err:
            raise LoginError(f"the token does not verify: {err}") from err
        if id_claims.get("sub") != access.claims.get("sub"):
            raise LoginError("the ID token and the access token name different subjects")
        return access, id_claims

    def verify_id_token(self, token: str, nonce: str, at: datetime) -> dict[str, Any]:
        header = unverified_header(token)
        alg, kid = header.get("alg"), header.get("kid")
        if "crit" in header or not isinstance(alg, str) or alg not in self.verifier.algorithms:
            raise LoginError(f"the ID token's algorithm {str(alg)[:20]!r} is not allowed")
        if not isinstance(kid, str) or not kid:
            raise LoginError("the ID token names no key")
        now = at.timestamp()
        key = self.verifier.jwks.key(kid, alg, now)
        signing_input, _, sig = token.rpartition(".")
        if not signature_valid(key, alg, signing_input.encode("ascii"), b64url_decode(sig, "signature")):
            raise LoginError("the ID token's signature does not verify")
        claims = _json_object(b64url_decode(signing_input.partition(".")[2], "payload"), "payload")
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        exp = claims.get("exp")
        if claims.get("iss") != self.issuer:
            raise LoginError("the ID token's issuer is not the realm's")
        if self.client_id not in audiences:
            raise LoginError("the ID token was not issued to the console")
        if isinstance(exp, bool) or not isinstance(exp, (int, float)) or not math.isfinite(exp) \
                or now >= exp + self.verifier.leeway:
            raise LoginError("the ID token has expired")
        if claims.get("typ", "ID") != "ID":
            raise LoginError("not an ID token")
        nonce_claim = claims.get("nonce")
        from .security import same
        if not isinstance(nonce_claim, str) or not same(nonce_claim, nonce):
            raise LoginError("the ID token's nonce is not this login's (a replayed or injected login)")
        return claims
