"""The access decision for the social-care system: allow only a verified access token of a user
who logged in with an e-ID card and an OTP recently, belongs to a municipality and whose required
training is current.

``evaluate`` is pure (claims, policy, training source and ``at`` in; a ``Decision`` out) and
reports every reason at once. ``AccessDecision`` adds the verifier. Deciding is all identity does:
the caller records the decision (``skydd.deny_log`` appends every deny to the audit log).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from estate.canonical import rfc3339

from .errors import IdentityError, KeysUnavailable, TokenError, TrainingUnavailable
from .settings import IdentitySettings, load_settings
from .tokens import VerifiedToken, Verifier, token_digest
from .training import TrainingSource, training_source

if TYPE_CHECKING:
    from estate.inventory import Inventory

class Code(StrEnum):
    """Why a decision denies. ``token``: the token itself is not acceptable."""

    TOKEN = "token"
    ACR = "acr"
    AMR = "amr"
    GROUP = "group"
    ROLE = "role"
    TRAINING = "training"
    AUTH_AGE = "auth_age"


@dataclass(frozen=True)
class Reason:
    code: Code
    cause: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code.value, "cause": self.cause, "message": self.message}


@dataclass(frozen=True)
class Decision:
    allow: bool
    reasons: tuple[Reason, ...]
    at: datetime
    token: str  # digest of the token
    user: str | None = None
    hsa_id: str | None = None
    municipalities: tuple[str, ...] = ()
    verified: bool = False  # whether the token itself verified

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(r.code.value for r in self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {"decision": "allow" if self.allow else "deny", "at": rfc3339(self.at),
                "user": self.user, "hsa_id": self.hsa_id,
                "municipalities": list(self.municipalities), "token": self.token,
                "reasons": [r.to_dict() for r in self.reasons]}


@dataclass(frozen=True)
class Policy:
    required_acr: str = "eid-card-otp"
    required_amr: tuple[str, ...] = ("sc", "otp")
    required_role: str | None = "socialcare-user"
    municipality_groups: frozenset[str] = field(default_factory=frozenset)
    max_auth_age_seconds: int = 8 * 3600
    leeway_seconds: int = 10

    @staticmethod
    def from_settings(settings: IdentitySettings, municipalities: Sequence[str]) -> Policy:
        groups = settings.municipality_groups or tuple(municipalities)
        return Policy(required_acr=settings.required_acr, required_amr=settings.required_amr,
                      required_role=settings.required_role, municipality_groups=frozenset(groups),
                      max_auth_age_seconds=settings.max_auth_age_seconds,
                      leeway_seconds=settings.leeway_seconds)


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, int):  # exact: a huge integer is a time, not an OverflowError
        return value
    return value if math.isfinite(value) else None


def evaluate(token: VerifiedToken, policy: Policy, training: TrainingSource,
             at: datetime) -> Decision:
    """The decision for a verified token at ``at``, with every reason to deny."""
    claims = token.claims
    reasons: list[Reason] = []

    acr = claims.get("acr")
    if acr is None:
        reasons.append(Reason(Code.ACR, "missing", "the token carries no acr"))
    elif acr != policy.required_acr:
        reasons.append(Reason(Code.ACR, "insufficient",
                              f"acr {str(acr)[:40]!r} is not {policy.required_acr!r} (card + OTP)"))

    amr = claims.get("amr")
    methods = {m for m in amr if isinstance(m, str)} if isinstance(amr, list) else set()
    missing = [m for m in policy.required_amr if m not in methods]
    if missing:
        reasons.append(Reason(Code.AMR, "missing_factor",
                              f"authentication methods lack {', '.join(missing)}"))

    municipalities = tuple(sorted(set(token.groups) & policy.municipality_groups))
    if not municipalities:
        reasons.append(Reason(Code.GROUP, "no_municipality",
                              "the user belongs to no municipality group"))

    if policy.required_role and policy.required_role not in token.roles:
        reasons.append(Reason(Code.ROLE, "missing",
                              f"the user lacks the realm role {policy.required_role!r}"))

    auth_time = _number(claims.get("auth_time"))
    now = at.timestamp()
    if auth_time is None:
        reasons.append(Reason(Code.AUTH_AGE, "missing", "the token carries no auth_time"))
    elif auth_time > now + policy.leeway_seconds:
        reasons.append(Reason(Code.AUTH_AGE, "future", "auth_time lies in the future"))
    elif now - auth_time > policy.max_auth_age_seconds:
        reasons.append(Reason(Code.AUTH_AGE, "too_old",
                              f"the login is {int(now - auth_time)} s old, more than "
                              f"{policy.max_auth_age_seconds} s"))

    try:
        status = training.training_status(token.username, token.hsa_id, at)
        if not status.current:
            reasons.append(Reason(Code.TRAINING, "not_current",
                                  status.reason or "required training is not current"))
    except TrainingUnavailable as err:
        reasons.append(Reason(Code.TRAINING, "unavailable", str(err)))

    return Decision(allow=not reasons, reasons=tuple(reasons), at=at, token=token.digest,
                    user=token.username, hsa_id=token.hsa_id, municipalities=municipalities,
                    verified=True)


def refused(err: IdentityError, token: str, at: datetime) -> Decision:
    """The deny for a token that could not be verified."""
    cause = err.cause if isinstance(err, TokenError) else (
        "keys_unavailable" if isinstance(err, KeysUnavailable) else "error")
    return Decision(allow=False, reasons=(Reason(Code.TOKEN, cause, str(err)),), at=at,
                    token=token_digest(token))


class AccessDecision:
    """Verify and decide. Recording a decision is the caller's job (the shell writes every deny
    to the audit log); identity only decides."""

    def __init__(self, verifier: Verifier, policy: Policy, training: TrainingSource) -> None:
        self.verifier, self.policy, self.training = verifier, policy, training

    @classmethod
    def from_inventory(cls, inventory: Inventory, home: Path,
                       settings: IdentitySettings | None = None) -> AccessDecision:
        """The decision service for an inventory's identity provider, with the home's settings
        and training source."""
        settings = settings or load_settings(home)
        return cls(Verifier.from_inventory(inventory, settings),
                   Policy.from_settings(settings, [m.id for m in inventory.municipalities]),
                   training_source(inventory, home, settings))

    def decide(self, token: str, at: datetime) -> Decision:
        """Verify and evaluate ``token`` at ``at``; an unverifiable token is a deny."""
        try:
            verified = self.verifier.verify(token, at)
        except (TokenError, KeysUnavailable) as err:
            return refused(err, token, at)
        return evaluate(verified, self.policy, self.training, at)
