"""The access decision against the real lab Keycloak: its JWKS over the lab's TLS, a forged token
under a real ``kid``, and a token obtained without card + OTP, all denied. (The allow path needs a
card + OTP login on the hardened realm: the login probe saves that token, and level d's lab
tests decide on it.)"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import jwt
import pytest
import requests

from estate.loader import load_inventory
from identity.decision import AccessDecision
from identity.errors import KeysUnavailable
from identity.jwks import https_fetcher, parse_jwks
from identity.tokens import Verifier, unverified_header
from skydd.deny_log import DenyLog
from skydd.lab import LAB_INVENTORY
from tests.lab.conftest import ensure_lab
from tests.unit.identity.fake_idp import RealmKey, make_tls


@pytest.fixture(scope="module")
def keycloak(lab_home: Path) -> Path:
    ensure_lab("keycloak", lab_home)
    return lab_home


def check_real_jwks(home: Path, scratch: Path) -> None:
    inv, _ = load_inventory(LAB_INVENTORY, home=home)
    verifier = Verifier.from_inventory(inv)
    at = dt.datetime.now(dt.UTC).timestamp()
    body = https_fetcher(verifier.jwks.source, ca_file=inv.identity_provider.ca_file, timeout=5)()
    kids = parse_jwks(body)
    assert kids and all(k.get("use", "sig") == "sig" for keys in kids.values() for k in keys)
    assert any(k.get("alg") == "RS256" for keys in kids.values() for k in keys)
    kid = next(iter(kids))
    assert verifier.jwks.key(kid, "RS256", at).key_id == kid
    other_ca, _, _ = make_tls(scratch / "other-ca")
    with pytest.raises(KeysUnavailable):  # TLS verification is on: another CA is refused
        https_fetcher(verifier.jwks.source, ca_file=str(other_ca), timeout=5)()


def check_forged_token(home: Path, scratch: Path) -> None:
    inv, _ = load_inventory(LAB_INVENTORY, home=home)
    decider = AccessDecision.from_inventory(inv, scratch / "home")
    now = dt.datetime.now(dt.UTC)
    kid = next(iter(parse_jwks(https_fetcher(decider.verifier.jwks.source,
                                             ca_file=inv.identity_provider.ca_file, timeout=5)())))
    t = int(now.timestamp())
    claims = {"exp": t + 300, "iat": t, "auth_time": t, "iss": decider.verifier.issuer,
              "aud": ["socialcare-app"], "azp": "socialcare-app", "typ": "Bearer", "sub": "x",
              "acr": "eid-card-otp", "amr": ["sc", "otp"], "groups": ["torsby"],
              "preferred_username": "anna.torsby", "realm_access": {"roles": ["socialcare-user"]}}
    forged = jwt.encode(claims, RealmKey("attacker").private, algorithm="RS256", headers={"kid": kid})
    decision = decider.decide(forged, now)
    assert not decision.allow and decision.reasons[0].cause == "signature"
    deny_log = DenyLog(scratch / "home")
    deny_log.record(decision)
    deny_log.close()
    log = (scratch / "home" / "audit.log").read_text()
    assert '"access.deny"' in log and forged not in log


def check_password_token(home: Path, scratch: Path) -> None:
    inv, _ = load_inventory(LAB_INVENTORY, home=home)
    idp = inv.identity_provider
    issuer = f"{idp.url}/realms/{idp.realm}"
    password = (home / "lab" / "keycloak" / "staff-password").read_text().strip()
    r = requests.post(f"{issuer}/protocol/openid-connect/token", verify=idp.ca_file, timeout=30,
                      data={"grant_type": "password", "client_id": "socialcare-app",
                            "username": "anna.torsby", "password": password, "scope": "openid"})
    if r.status_code != 200:  # the realm is already hardened: Keycloak itself refuses the path
        assert r.json().get("error") in ("unauthorized_client", "invalid_client", "invalid_grant")
        return
    tokens = r.json()
    now = dt.datetime.now(dt.UTC)
    decider = AccessDecision.from_inventory(inv, scratch / "home")
    decision = decider.decide(tokens["access_token"], now)
    assert not decision.allow
    assert set(decision.codes) & {"token", "acr", "amr"}, decision.to_dict()
    header = unverified_header(tokens["access_token"])
    key = decider.verifier.jwks.key(header["kid"], header["alg"], now.timestamp())
    claims = jwt.decode(tokens["access_token"], key, algorithms=[header["alg"]],
                        options={"verify_aud": False})  # the real signature verifies
    assert claims["iss"] == decider.verifier.issuer
    for name in ("id_token", "refresh_token"):
        if name in tokens:
            refused = decider.decide(tokens[name], now)
            assert not refused.allow and refused.codes == ("token",), json.dumps(refused.to_dict())


def test_real_jwks_over_the_lab_tls(keycloak: Path, tmp_path: Path) -> None:
    check_real_jwks(keycloak, tmp_path)


def test_forged_token_under_a_real_kid_is_denied(keycloak: Path, tmp_path: Path) -> None:
    check_forged_token(keycloak, tmp_path)


def test_token_without_card_and_otp_is_denied(keycloak: Path, tmp_path: Path) -> None:
    check_password_token(keycloak, tmp_path)
