"""Errors of the identity package, grouped by whose fault they are.

- ``TokenError``: the presented token is not acceptable (the caller's fault). Each subclass
  carries a short machine-readable ``cause`` (``expired``, ``issuer``, ``algorithm`` …).
- ``KeysUnavailable``: the identity provider's signing keys could not be fetched and the cached
  ones are older than the stale window (the source's fault). Callers deny.
- ``TrainingUnavailable``: training records could not be read (the source's fault). Callers deny.
- ``IdentityConfigError``: Skydd's own identity settings are wrong (the operator's fault).
"""

from __future__ import annotations

from estate.errors import SkyddError


class IdentityError(SkyddError):
    """Root of the identity package's errors."""


class IdentityConfigError(IdentityError):
    """Identity settings or the inventory's identity provider are unusable."""

    exit_code = 2


class KeysUnavailable(IdentityError):
    """The JWKS could not be fetched and no cached keys are fresh enough to use."""


class TrainingUnavailable(IdentityError):
    """The training records could not be read; the decision fails closed."""


class TokenError(IdentityError):
    """The token cannot be accepted. ``cause`` names the check that refused it."""

    cause = "token"


class MalformedToken(TokenError):
    cause = "malformed"


class AlgorithmNotAllowed(TokenError):
    cause = "algorithm"


class CriticalHeader(TokenError):
    cause = "crit"


class UnknownKey(TokenError):
    cause = "unknown_key"


class BadSignature(TokenError):
    cause = "signature"


class MissingClaim(TokenError):
    cause = "missing_claim"


class WrongIssuer(TokenError):
    cause = "issuer"


class WrongAudience(TokenError):
    cause = "audience"


class WrongParty(TokenError):
    """``azp`` is not the configured client."""

    cause = "azp"


class WrongTokenType(TokenError):
    """Not an access token (``typ`` is not ``Bearer``): an ID or refresh token, for example."""

    cause = "type"


class Expired(TokenError):
    cause = "expired"


class NotYetValid(TokenError):
    cause = "not_yet_valid"


class IssuedInFuture(TokenError):
    cause = "iat"
