"""Keycloak: the realm's configuration through the admin API (``keycloak.realm``) and the live
login probe (``keycloak.probe``), both over python-keycloak via ``identity.keycloak_admin``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .interface import Collector, CollectorError, Observation

REALM_FIELDS = (
    "sslRequired", "bruteForceProtected", "permanentLockout", "failureFactor", "waitIncrementSeconds",
    "maxFailureWaitSeconds", "maxDeltaTimeSeconds", "passwordPolicy", "otpPolicyType",
    "otpPolicyAlgorithm", "otpPolicyDigits", "otpPolicyPeriod", "otpPolicyLookAheadWindow",
    "otpPolicyCodeReusable", "accessTokenLifespan", "accessCodeLifespan", "ssoSessionIdleTimeout",
    "ssoSessionMaxLifespan", "rememberMe", "revokeRefreshToken", "refreshTokenMaxReuse",
    "registrationAllowed", "resetPasswordAllowed", "browserFlow", "directGrantFlow",
    "resetCredentialsFlow")
EVENT_FIELDS = ("eventsEnabled", "eventsExpiration", "eventsListeners", "adminEventsEnabled",
                "adminEventsDetailsEnabled")


def _connect(idp: Any) -> Any:
    from estate.errors import InputError
    from estate.secrets import resolve_secret
    from identity.keycloak_admin import KeycloakAdmin, KeycloakAdminError

    try:
        user, password = resolve_secret(idp.admin_username), resolve_secret(idp.admin_password)
    except InputError as err:
        raise CollectorError(str(err)) from err
    try:
        return KeycloakAdmin.connect(idp.url, idp.realm, user, password, ca_file=idp.ca_file)
    except KeycloakAdminError as err:
        raise CollectorError(str(err)) from err


def parse_password_policy(text: str | None) -> dict[str, Any]:
    """``length(14) and digits(1)`` → ``{"length": 14, "digits": 1}`` (numbers where they are)."""
    out: dict[str, Any] = {}
    for part in (text or "").split(" and "):
        part = part.strip()
        if not part:
            continue
        name, _, rest = part.partition("(")
        value: Any = rest.rstrip(")")
        try:
            value = int(value)
        except ValueError:
            pass
        out[name.strip()] = value
    return out


def flow_tree(admin: Any, alias: str) -> list[dict[str, Any]]:
    """A flow as nested nodes: ``{"provider"|"flow", "requirement", "config", "children"}``."""
    rows = admin.executions(alias)
    root: list[dict[str, Any]] = []
    stack: list[list[dict[str, Any]]] = [root]
    for row in rows:
        level = int(row.get("level", 0))
        del stack[level + 1:]
        node: dict[str, Any] = {"requirement": row.get("requirement")}
        if row.get("authenticationFlow"):
            node["flow"] = row.get("displayName")
            node["children"] = []
        else:
            node["provider"] = row.get("providerId")
            cfg_id = row.get("authenticationConfig")
            node["config"] = admin.authenticator_config(cfg_id).get("config", {}) if cfg_id else {}
        stack[-1].append(node)
        if "children" in node:
            stack.append(node["children"])
    return root


class KeycloakRealmCollector(Collector):
    kinds = ("keycloak.realm",)
    timeout = 60.0

    def __init__(self, idp: Any, app_clients: list[str], **kw: Any) -> None:
        super().__init__(idp.id, **kw)
        self.idp = idp
        self.app_clients = app_clients

    def collect(self) -> Iterable[Observation]:
        from identity.keycloak_admin import KeycloakAdminError

        admin = _connect(self.idp)
        try:
            realm = admin.realm_settings()
            events = admin.events_config()
            profile = admin.user_profile()
            clients = [admin.get(f"clients/{c['id']}") for c in admin.clients()]
            flows = {}
            for key in ("browserFlow", "directGrantFlow", "resetCredentialsFlow"):
                alias = realm.get(key)
                if alias:
                    flows[key] = {"alias": alias, "executions": flow_tree(admin, alias)}
        except KeycloakAdminError as err:
            raise CollectorError(str(err)) from err
        attrs = realm.get("attributes") or {}
        try:
            loa_map = json.loads(attrs.get("acr.loa.map") or "{}")
        except ValueError:
            loa_map = {}
        hsa = next((a for a in profile.get("attributes", []) if a.get("name") == "hsaId"), None)
        by_id = {c["clientId"]: c for c in clients}
        data = {
            "realm": {k: realm.get(k) for k in REALM_FIELDS},
            "password_policy": _password_summary(parse_password_policy(realm.get("passwordPolicy"))),
            "events": {"eventsEnabled": bool(events.get("eventsEnabled")),
                       "adminEventsEnabled": bool(events.get("adminEventsEnabled")),
                       "adminEventsDetailsEnabled": bool(events.get("adminEventsDetailsEnabled")),
                       "eventsExpiration": int(events.get("eventsExpiration") or 0),
                       "eventsListeners": events.get("eventsListeners") or []},
            "acr_loa_map": loa_map,
            "user_profile": {"hsaId": _attribute_summary(hsa)},
            "flows": flows,
            "clients": [_client(c) for c in clients],
            "app_clients": [_client(by_id[c]) if c in by_id else {"clientId": c, "missing": True}
                            for c in self.app_clients],
        }
        yield Observation(self.kinds[0], f"{self.idp.id}:{self.idp.realm}", data)


def _password_summary(policy: dict[str, Any]) -> dict[str, Any]:
    def num(key: str) -> int:
        v = policy.get(key, 0)
        return v if isinstance(v, int) else 1
    return {"min_length": num("length"), "history": num("passwordHistory"),
            "not_username": "notUsername" in policy, "upper": num("upperCase"),
            "lower": num("lowerCase"), "digits": num("digits"), "policy": policy}


def _attribute_summary(attr: dict[str, Any] | None) -> dict[str, Any]:
    if attr is None:
        return {"declared": False, "edit": [], "pattern": None}
    perms = attr.get("permissions") or {}
    pattern = ((attr.get("validations") or {}).get("pattern") or {}).get("pattern")
    return {"declared": True, "edit": sorted(perms.get("edit") or []), "pattern": pattern}


def _client(c: dict[str, Any]) -> dict[str, Any]:
    attrs = c.get("attributes") or {}
    mappers = c.get("protocolMappers") or []
    return {
        "clientId": c.get("clientId"), "enabled": c.get("enabled"), "publicClient": c.get("publicClient"),
        "bearerOnly": c.get("bearerOnly"),
        "standardFlowEnabled": c.get("standardFlowEnabled"),
        "implicitFlowEnabled": c.get("implicitFlowEnabled"),
        "directAccessGrantsEnabled": c.get("directAccessGrantsEnabled"),
        "redirectUris": c.get("redirectUris") or [], "webOrigins": c.get("webOrigins") or [],
        "redirects_exact": bool(c.get("redirectUris")) and not any(
            "*" in u for u in [*(c.get("redirectUris") or []), *(c.get("webOrigins") or [])]),
        "pkce": attrs.get("pkce.code.challenge.method"),
        "default_acr_values": attrs.get("default.acr.values"),
        "minimum_acr_value": attrs.get("minimum.acr.value"),
        "mappers": sorted({m.get("protocolMapper") for m in mappers if m.get("protocolMapper")}),
        "audiences": sorted({(m.get("config") or {}).get("included.client.audience") for m in mappers
                             if m.get("protocolMapper") == "oidc-audience-mapper"} - {None}),
    }


class KeycloakProbeCollector(Collector):
    kinds = ("keycloak.probe",)
    timeout = 240.0

    def __init__(self, idp: Any, **kw: Any) -> None:
        super().__init__(idp.id, **kw)
        self.idp = idp

    def collect(self) -> Iterable[Observation]:
        from estate.errors import InputError
        from estate.secrets import resolve_secret
        from identity.keycloak_admin import KeycloakAdminError
        from identity.probe import LoginProbe, ProbeError, ProbeSettings

        p = self.idp.probe
        try:
            password = resolve_secret(p.password)
        except InputError as err:
            raise CollectorError(str(err)) from err
        settings = ProbeSettings(
            url=self.idp.url, realm=self.idp.realm, ca_file=self.idp.ca_file, client_id=p.client_id,
            redirect_uri=p.redirect_uri, username=p.username, lockout_username=p.lockout_username,
            password=password, card=Path(p.card), revoked_card=Path(p.revoked_card),
            foreign_card=Path(p.foreign_card), lockout_card=Path(p.lockout_card),
            state_dir=Path(p.state_dir))
        admin = _connect(self.idp)
        try:
            evidence = LoginProbe(settings, admin, clock=time.time).run()
        except (ProbeError, KeycloakAdminError) as err:
            raise CollectorError(f"login probe: {err}") from err
        yield Observation(self.kinds[0], f"{self.idp.id}:{self.idp.realm}", evidence)


def from_inventory(inventory: Any, home: Path) -> list[Collector]:
    idp = inventory.identity_provider
    if idp is None:
        return []
    clients = list(dict.fromkeys([*(s.oidc_client for s in inventory.systems if s.oidc_client),
                                  *idp.clients]))
    out: list[Collector] = [KeycloakRealmCollector(idp, clients)]
    if idp.probe is not None:
        out.append(KeycloakProbeCollector(idp))
    return out
