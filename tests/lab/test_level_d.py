"""Level d on a real Keycloak: as found every level-d control fails; `skydd apply --level d`
hardens the realm (check mode first changes nothing); then every level-d control passes, a second
apply changes nothing, and the live login probe shows each refusal and the card+OTP success.

One Keycloak per session (``ensure_lab``); the steps run in order in one module fixture.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import skewed_clock
from tests.lab.conftest import ensure_lab

SKYDD = str(Path(sys.executable).parent / "skydd")
LEVEL_D_KEYCLOAK = {  # the controls that rest on Keycloak (d.key-files-private is the key_store role's)
    "d.browser-flow-card-otp", "d.brute-force-lockout", "d.card-trust-revocation",
    "d.clients-confidential-pkce", "d.direct-grants-off", "d.event-logging", "d.login-probe-card-otp",
    "d.login-probe-lockout", "d.login-probe-refusals", "d.otp-policy", "d.password-policy",
    "d.reset-credentials-card", "d.session-token-lifetimes", "d.ssl-required-all", "d.tokens-acr-amr",
    "d.user-profile-hsaid"}


def skydd(home: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SKYDD_HOME": str(home)}
    res = subprocess.run([SKYDD, *args], env=env, capture_output=True, text=True, timeout=timeout)
    print(f"$ skydd {' '.join(args)} -> {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def findings(out: Path) -> dict[str, dict[str, Any]]:
    report = json.loads((out / "report.json").read_text())
    return {f["control"]: f for f in report["findings"]}


def changed_on(output: str, host: str) -> int:
    m = re.search(rf"^{re.escape(host)}: ok=\d+ changed=(\d+)", output, re.M)
    assert m, f"no recap for {host} in:\n{output[-2000:]}"
    return int(m.group(1))


def realm_state(home: Path) -> dict[str, Any]:
    from identity.keycloak_admin import KeycloakAdmin

    kc = home / "lab" / "keycloak"
    admin = KeycloakAdmin.connect("https://localhost:8443", "socialcare",
                                  (kc / "admin-username").read_text().strip(),
                                  (kc / "admin-password").read_text().strip(),
                                  ca_file=str(home / "lab" / "pki" / "ca.pem"))
    return admin.realm_settings()


@pytest.fixture(scope="module")
def journey(lab_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    ensure_lab("keycloak", lab_home)
    out = tmp_path_factory.mktemp("level-d")
    j: dict[str, Any] = {"home": lab_home}
    j["audit_found"] = skydd(lab_home, "audit", "--level", "d", "--out", str(out / "found"))
    j["found"] = findings(out / "found")
    j["check"] = skydd(lab_home, "apply", "--level", "d", "--check", "--diff")
    j["realm_after_check"] = realm_state(lab_home)
    j["apply"] = skydd(lab_home, "apply", "--level", "d")
    j["audit_hardened"] = skydd(lab_home, "audit", "--level", "d", "--out", str(out / "hardened"))
    j["hardened"] = findings(out / "hardened")
    j["again"] = skydd(lab_home, "apply", "--level", "d")
    return j


def test_every_level_d_control_fails_as_found(journey: dict[str, Any]) -> None:
    assert journey["audit_found"].returncode == 1
    statuses = {c: f["status"] for c, f in journey["found"].items() if c in LEVEL_D_KEYCLOAK}
    assert set(statuses) == LEVEL_D_KEYCLOAK
    assert set(statuses.values()) == {"fail"}, statuses


def test_check_mode_reports_changes_and_changes_nothing(journey: dict[str, Any]) -> None:
    check = journey["check"]
    assert check.returncode == 0
    assert changed_on(check.stdout + check.stderr, "keycloak") > 0
    realm = journey["realm_after_check"]
    assert realm["browserFlow"] == "browser" and realm["sslRequired"] == "external"


def test_apply_hardens_and_level_d_passes(journey: dict[str, Any]) -> None:
    assert journey["apply"].returncode == 0
    assert journey["audit_hardened"].returncode == 0
    statuses = {c: f["status"] for c, f in journey["hardened"].items()}
    assert set(statuses) >= LEVEL_D_KEYCLOAK
    assert {statuses[c] for c in LEVEL_D_KEYCLOAK} == {"pass"}, statuses


def test_second_apply_changes_nothing(journey: dict[str, Any]) -> None:
    again = journey["again"]
    assert again.returncode == 0
    assert changed_on(again.stdout + again.stderr, "keycloak") == 0


def test_probe_scenarios_after_hardening(journey: dict[str, Any]) -> None:
    """The live probe, run once more: each refusal, the lockout and the card+OTP success."""
    from audit.collectors.keycloak import KeycloakProbeCollector
    from estate.loader import load_inventory
    from skydd.lab import LAB_INVENTORY

    home = journey["home"]
    inventory, _ = load_inventory(LAB_INVENTORY, home=home)
    (obs,) = KeycloakProbeCollector(inventory.identity_provider).collect()
    sc = obs.data["scenarios"]
    ok = sc["card_otp"]
    assert ok["outcome"] == "success", ok
    claims = ok["claims"]
    assert claims["acr"] == "eid-card-otp"
    assert {"sc", "otp"} <= set(claims["amr"])
    assert "socialcare-app" in claims["aud"] and claims["azp"] == "socialcare-app"
    assert claims["typ"] == "Bearer" and "torsby" in claims["groups"]
    assert claims["hsaId"] == "SE2321000016-P001"
    assert "socialcare-user" in claims["realm_access"]["roles"]
    for name in ("no_card", "password_alone", "revoked_card", "foreign_card", "wrong_otp", "direct_grant"):
        assert sc[name]["outcome"] == "refused", (name, sc[name])
    assert "otp" in sc["wrong_otp"]["pages"]
    assert sc["lockout"]["locked"] is True and sc["lockout"]["after_lock"]["outcome"] == "refused"
    token = home / "lab" / "keycloak" / "probe" / "access-token"
    assert token.stat().st_mode & 0o777 == 0o600 and token.read_text().count(".") == 2


def test_access_decision_on_the_real_card_otp_token(journey: dict[str, Any], tmp_path: Path) -> None:
    """The allow path end to end: the probe's card+OTP token from the hardened realm is allowed
    by ``skydd decide`` while the user's training is current, and denied for ``training`` alone
    once it has lapsed. With the process's clock 10 minutes ahead (libfaketime) the same token
    is past its exp (the hardened realm's 300 s lifespan) and denied as expired, for that alone
    (a clock behind is tests/unit/identity/test_faults.py: the lab's TLS certificates start only
    5 minutes before the lab)."""
    home = journey["home"]
    token = home / "lab" / "keycloak" / "probe" / "access-token"
    assert token.exists(), "the login probe saves the card+OTP token (test_probe_scenarios_after_hardening)"
    decide_home = tmp_path / "decide-home"
    decide_home.mkdir()
    records = tmp_path / "training.yaml"
    settings = decide_home / "identity.yaml"
    settings.write_text(f"training_file: {records}\n")
    env_home = {"SKYDD_HOME": str(decide_home)}
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text((Path(__file__).resolve().parents[2] / "skydd" / "lab" / "inventory.yaml")
                         .read_text().replace("${SKYDD_HOME}", str(home)))

    def decide(valid_until: str, clock: tuple[str, ...] = ()) -> tuple[int, dict[str, Any]]:
        records.write_text("required: [information-security]\nusers:\n"
                           f"  probe.card: {{information-security: {valid_until}}}\n")
        r = subprocess.run([*clock, SKYDD, "decide", "--token-file", str(token), "--inventory",
                            str(inventory)],
                           env={**os.environ, **env_home}, capture_output=True, text=True, timeout=120)
        assert r.returncode in (0, 1), r.stderr
        return r.returncode, json.loads(r.stdout)

    code, allowed = decide("2099-01-01T00:00:00Z")
    assert code == 0 and allowed["decision"] == "allow", allowed
    code, ahead = decide("2099-01-01T00:00:00Z", tuple(skewed_clock("+10m")))
    assert code == 1 and [r["cause"] for r in ahead["reasons"]] == ["expired"], ahead
    code, denied = decide("2020-01-01T00:00:00Z")
    assert code == 1 and [r["code"] for r in denied["reasons"]] == ["training"], denied
    assert '"access.deny"' in (decide_home / "audit.log").read_text()
