"""Named checks for level d (authentication): Keycloak flows, card checks, tokens, login probe."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from itertools import product
from typing import Any

from ..checks import Outcome, named_check, resolve
from ..errors import EvidenceMissing

CARD = "auth-x509-client-username-form"
OTP = "auth-otp-form"
COOKIE = "auth-cookie"
LOA_CONDITION = "conditional-level-of-authentication"


# -- authentication flows ------------------------------------------------------------------------

def _is_condition(node: Mapping[str, Any]) -> bool:
    return str(node.get("provider", "")).startswith("conditional-")


def flow_paths(nodes: list[Mapping[str, Any]]) -> list[frozenset[str]]:
    """Every set of authenticators one successful run of a basic flow can consist of.

    Keycloak's rules: DISABLED is skipped; when a flow has REQUIRED or CONDITIONAL elements its
    ALTERNATIVE ones are ignored, otherwise one ALTERNATIVE must succeed. A CONDITIONAL sub-flow
    may be skipped when its condition is false, except one gated only by a level-of-authentication
    condition, which runs whenever that level is requested (clients pin it with a minimum acr).
    """
    live = [n for n in nodes if n.get("requirement") != "DISABLED" and not _is_condition(n)]
    required = [n for n in live if n.get("requirement") in ("REQUIRED", "CONDITIONAL")]
    if required:
        options = [_options(n) for n in required]
        return list({frozenset().union(*combo) for combo in product(*options)})
    alternatives = [n for n in live if n.get("requirement") == "ALTERNATIVE"]
    out: set[frozenset[str]] = set()
    for n in alternatives:
        out.update(_options(n))
    return list(out)


def _options(node: Mapping[str, Any]) -> list[frozenset[str]]:
    if "children" not in node:
        return [frozenset([str(node.get("provider"))])]
    children = node.get("children") or []
    paths = flow_paths(children)
    if node.get("requirement") == "CONDITIONAL":
        conditions = {c.get("provider") for c in children if _is_condition(c)
                      and c.get("requirement") != "DISABLED"}
        if conditions != {LOA_CONDITION}:
            paths = [*paths, frozenset()]
    return paths


@named_check("keycloak_flow_requires")
def flow_requires(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    """Every way through the bound flow (other than an existing session cookie) uses all of
    ``params.providers``."""
    which = params.get("flow", "browserFlow")
    flow = resolve(data, ("flows",), "flows").get(which)
    if not flow:
        raise EvidenceMissing(f"no {which} bound in the realm")
    needed = set(params.get("providers", [CARD, OTP]))
    paths = [p for p in flow_paths(flow.get("executions") or []) if p and p != {COOKIE}]
    if not paths:
        return Outcome(False, f"{which} {flow.get('alias')!r} has no way to log in", {which: []})
    weak = sorted(sorted(p) for p in paths if not needed <= p)
    shown = {which: flow.get("alias"), "paths": sorted(sorted(p) for p in paths)}
    if weak:
        return Outcome(False, f"{which} {flow.get('alias')!r} admits a login without "
                              f"{' + '.join(sorted(needed))}: {weak[0]}", shown)
    return Outcome(True, f"{which} {flow.get('alias')!r}: every login needs {' + '.join(sorted(needed))}",
                   shown)


def _find(nodes: list[Mapping[str, Any]], provider: str) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    for n in nodes:
        if n.get("provider") == provider and n.get("requirement") != "DISABLED":
            out.append(n)
        out.extend(_find(n.get("children") or [], provider))
    return out


@named_check("keycloak_card_checks")
def card_checks(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    """The card authenticator of the browser flow checks validity, revocation (CRL), KeyUsage,
    EKU and the certificate policy, and maps the HSA-id."""
    flow = resolve(data, ("flows",), "flows").get("browserFlow")
    if not flow:
        raise EvidenceMissing("no browserFlow bound in the realm")
    cards = _find(flow.get("executions") or [], CARD)
    if not cards:
        return Outcome(False, f"browser flow {flow.get('alias')!r} has no card (X.509) authenticator",
                       {"card_authenticators": 0})
    bad: dict[str, Any] = {}
    for node in cards:
        cfg = node.get("config") or {}
        want = {
            "x509-cert-auth.timestamp-validation-enabled":
                cfg.get("x509-cert-auth.timestamp-validation-enabled") == "true",
            "revocation (CRL or OCSP)": cfg.get("x509-cert-auth.crl-checking-enabled") == "true"
            or cfg.get("x509-cert-auth.ocsp-checking-enabled") == "true",
            "x509-cert-auth.ocsp-fail-open off": cfg.get("x509-cert-auth.ocsp-fail-open", "false") != "true",
            "x509-cert-auth.keyusage digitalSignature": "digitalSignature" in cfg.get("x509-cert-auth.keyusage", ""),
            "x509-cert-auth.extendedkeyusage clientAuth":
                "1.3.6.1.5.5.7.3.2" in cfg.get("x509-cert-auth.extendedkeyusage", ""),
            "x509-cert-auth.certificate-policy": bool(cfg.get("x509-cert-auth.certificate-policy")),
            f"maps to {params.get('attribute', 'hsaId')}":
                cfg.get("x509-cert-auth.mapper-selection.user-attribute-name") == params.get("attribute", "hsaId"),
        }
        bad.update({k: False for k, ok in want.items() if not ok})
    if bad:
        return Outcome(False, "card authenticator does not check: " + ", ".join(sorted(bad)), bad)
    return Outcome(True, "card authenticator checks validity, revocation, key usage, EKU and policy",
                   {"card_authenticators": len(cards)})


@named_check("keycloak_tokens_acr_amr")
def tokens_acr_amr(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    """The card+OTP level has an acr (``acr.loa.map``); application clients default to and
    require it and carry the amr, audience and groups mappers; the factors carry amr references."""
    acr, level = params["acr"], params["level"]
    problems: list[str] = []
    loa = resolve(data, ("acr_loa_map",), "acr_loa_map")
    if loa.get(acr) != level:
        problems.append(f"acr.loa.map has {acr}={loa.get(acr)!r}, expected {level}")
    clients = resolve(data, ("app_clients",), "app_clients")
    if not clients:
        raise EvidenceMissing("no application clients observed")
    for c in clients:
        name = c.get("clientId")
        if c.get("missing"):
            problems.append(f"{name}: client missing")
            continue
        if c.get("default_acr_values") != acr or c.get("minimum_acr_value") != acr:
            problems.append(f"{name}: default/minimum acr is {c.get('default_acr_values')!r}/"
                            f"{c.get('minimum_acr_value')!r}")
        for m in ("oidc-amr-mapper", "oidc-audience-mapper", "oidc-group-membership-mapper"):
            if m not in (c.get("mappers") or []):
                problems.append(f"{name}: no {m}")
        if name not in (c.get("audiences") or []):
            problems.append(f"{name}: access tokens lack aud={name}")
    flow = (data.get("flows") or {}).get("browserFlow") or {}
    refs = {n.get("provider"): (n.get("config") or {}).get("default.reference.value")
            for p in (CARD, OTP) for n in _find(flow.get("executions") or [], p)}
    for p, ref in ((CARD, "sc"), (OTP, "otp")):
        # Keycloak's admin API masks these values; a masked one is set (the probe shows its value)
        if refs.get(p) not in (ref, "**********"):
            problems.append(f"{p} has amr reference {refs.get(p)!r}, expected {ref!r}")
    if problems:
        return Outcome(False, "; ".join(problems[:6]), {"problems": problems})
    return Outcome(True, f"tokens carry acr={acr} (level {level}), amr sc+otp, audience and groups",
                   {"clients": [c.get("clientId") for c in clients]})


# -- the live login probe --------------------------------------------------------------------------

def _scenario(data: Any, name: str) -> Mapping[str, Any]:
    scenario: Mapping[str, Any] = resolve(data, ("scenarios", name), f"scenarios.{name}")
    return scenario


@named_check("keycloak_probe_card_otp")
def probe_card_otp(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    """The probe logged in with card + OTP, and the token says so."""
    s = _scenario(data, "card_otp")
    if s.get("outcome") != "success":
        return Outcome(False, f"card+OTP login failed after {s.get('pages')}: {s.get('detail')}",
                       {"pages": s.get("pages"), "detail": s.get("detail")})
    c = s.get("claims") or {}
    client = data.get("client_id")
    raw_aud = c.get("aud")
    aud = raw_aud if isinstance(raw_aud, list) else [raw_aud]
    problems = []
    if "otp" not in (s.get("pages") or []) and "otp-enrolment" not in (s.get("pages") or []):
        problems.append("no OTP step was asked for")
    if c.get("acr") != params["acr"]:
        problems.append(f"acr={c.get('acr')!r}")
    if not {"sc", "otp"} <= set(c.get("amr") or []):
        problems.append(f"amr={c.get('amr')!r}")
    if client not in aud or c.get("azp") != client:
        problems.append(f"aud={c.get('aud')!r} azp={c.get('azp')!r}")
    if problems:
        return Outcome(False, "card+OTP login succeeded but " + ", ".join(problems), {"claims": c})
    return Outcome(True, f"card+OTP login succeeded: acr={c.get('acr')}, amr={c.get('amr')}",
                   {"pages": s.get("pages"), "acr": c.get("acr"), "amr": c.get("amr")})


REFUSALS = ("no_card", "password_alone", "revoked_card", "foreign_card", "wrong_otp", "direct_grant")


@named_check("keycloak_probe_refusals")
def probe_refusals(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    """Every login that lacks a factor, or uses a revoked or foreign card, or the password grant,
    is refused — and the probe's own card+OTP login worked, so the refusals mean something."""
    observed = {n: _scenario(data, n).get("outcome") for n in REFUSALS}
    admitted = [n for n, o in observed.items() if o != "refused"]
    if admitted:
        return Outcome(False, "admitted: " + ", ".join(
            f"{n} ({_scenario(data, n).get('pages')})" for n in admitted), observed)
    if _scenario(data, "card_otp").get("outcome") != "success":
        return Outcome(False, "every login was refused, the card+OTP one too: the refusals prove "
                              "nothing", observed)
    return Outcome(True, "refused: " + ", ".join(REFUSALS), observed)


@named_check("keycloak_probe_lockout")
def probe_lockout(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    """Repeated wrong OTP codes lock the account: the right code is then refused."""
    lock = resolve(data, ("scenarios", "lockout"), "scenarios.lockout")
    after = (lock.get("after_lock") or {}).get("outcome")
    shown = {"wrong_attempts": lock.get("wrong_attempts"), "locked": lock.get("locked"),
             "after_lock": after, "wrong_pages": lock.get("wrong_pages")}
    if "otp" not in (lock.get("wrong_pages") or []):
        return Outcome(False, f"the wrong codes never reached an OTP step (pages "
                              f"{lock.get('wrong_pages')})", shown)
    if not lock.get("locked") or after != "refused":
        return Outcome(False, f"after {lock.get('wrong_attempts')} wrong codes the account is "
                              f"{'locked' if lock.get('locked') else 'not locked'} and the right "
                              f"code was {after}", shown)
    return Outcome(True, f"locked after {lock.get('wrong_attempts')} wrong codes; the right code "
                         "was then refused", shown)
