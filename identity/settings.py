"""Identity settings: what the verifier and the access decision demand.

Defaults are the safe ones for the social-care system. An operator may override them in
``$SKYDD_HOME/identity.yaml`` (strict: an unknown key is an error). The issuer, the JWKS URL and
the TLS CA come from the inventory's ``identity_provider``, never from here.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from .errors import IdentityConfigError

SETTINGS_FILE = "identity.yaml"
#: Algorithms a Keycloak realm may sign access tokens with that Skydd accepts. Never ``none``,
#: never a symmetric (HS*) algorithm: the verifier only ever holds public keys.
ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
                        "ES512", "EdDSA"})


class IdentitySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    client_id: str = "socialcare-app"
    algorithms: tuple[str, ...] = ("RS256", "PS256", "ES256")
    leeway_seconds: int = Field(default=10, ge=0, le=120)
    required_acr: str = "eid-card-otp"
    required_amr: tuple[str, ...] = ("sc", "otp")
    required_role: str | None = "socialcare-user"
    #: Groups that mark a municipality; empty means "the inventory's municipality ids".
    municipality_groups: tuple[str, ...] = ()
    max_auth_age_seconds: int = Field(default=8 * 3600, ge=60)
    jwks_lifespan_seconds: int = Field(default=300, ge=1)
    jwks_cooldown_seconds: int = Field(default=30, ge=1)
    #: How long cached keys stay usable while the identity provider is unreachable.
    jwks_stale_seconds: int = Field(default=3600, ge=0, le=24 * 3600)
    jwks_timeout_seconds: float = Field(default=3.0, gt=0, le=30)
    #: The file-backed training source (until a training store is configured).
    training_file: str | None = None

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [a for a in value if a not in ASYMMETRIC]
        if bad or not value:
            raise ValueError(f"algorithms must be asymmetric signature algorithms, not {bad or 'none'}")
        return value


def load_settings(home: Path) -> IdentitySettings:
    """The identity settings of a Skydd home: defaults, overridden by ``identity.yaml``."""
    path = home / SETTINGS_FILE
    if not path.exists():
        return IdentitySettings()
    try:
        doc = YAML(typ="safe").load(path.read_text(encoding="utf-8")) or {}
        return IdentitySettings.model_validate(doc)
    except (OSError, YAMLError) as err:
        raise IdentityConfigError(f"{path}: cannot read identity settings: {err}") from err
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top)"
        raise IdentityConfigError(f"{path}: {field}: {first['msg']}") from err
