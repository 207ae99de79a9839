"""The console app end to end in process: the OIDC callback with tokens signed by a realm key
(the code exchange is the only step not run against Keycloak here; the browser test does that),
the session cookie's attributes, the officer and roster checks, CSRF, forged and replayed cookies,
the four-eyes refusal, and ``skydd console``'s bad input (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from starlette.testclient import TestClient

from estate.settings import Settings
from identity.jwks import JwksCache
from identity.tokens import Verifier
from skydd.officers import Officer, Roster, RosterEntry
from skydd.web.console.app import SESSION_COOKIE, ConsoleConfig, create_console
from skydd.web.console.oidc import LoginError, Provider
from tests.unit.identity.fake_idp import RealmKey

ISS = "https://localhost:8443/realms/socialcare"
CLIENT = "skydd-console"
URL = "https://testserver"
GRETA = Officer("5e1f0a11-0000-4000-8000-000000000001", "Greta Officer (Torsby)", "greta.officer")
OLOF = Officer("5e1f0a11-0000-4000-8000-000000000002", "Olof Officer (Sunne)", "olof.officer")
SKYDD = str(Path(sys.executable).parent / "skydd")
KEY = RealmKey("console-k1")


@dataclass(frozen=True)
class SignedProvider(Provider):
    """The real provider but for the code exchange: codes map to tokens minted with a realm key."""

    codes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def exchange(self, code: str, verifier: str) -> dict[str, Any]:
        if code not in self.codes:
            raise LoginError("the identity provider refused the code exchange: invalid_grant")
        return self.codes.pop(code)


def mint(sub: str, nonce: str, *, acr: str = "eid-card-otp", amr: tuple[str, ...] = ("sc", "otp"),
         roles: tuple[str, ...] = ("security-officer",), key: RealmKey = KEY) -> dict[str, str]:
    now = int(datetime.now(UTC).timestamp())
    base = {"exp": now + 300, "iat": now, "iss": ISS, "sub": sub, "auth_time": now}
    access = {**base, "aud": [CLIENT], "azp": CLIENT, "typ": "Bearer", "acr": acr, "amr": list(amr),
              "preferred_username": sub[-1], "realm_access": {"roles": list(roles)}}
    ident = {**base, "aud": CLIENT, "azp": CLIENT, "typ": "ID", "nonce": nonce, "name": "Someone"}
    return {"access_token": jwt.encode(access, key.private, algorithm="RS256", headers={"kid": key.kid}),
            "id_token": jwt.encode(ident, key.private, algorithm="RS256", headers={"kid": key.kid})}


@pytest.fixture()
def console(tmp_path: Path) -> tuple[TestClient, SignedProvider, Settings]:
    jwks = JwksCache(lambda: json.dumps({"keys": [KEY.jwk]}).encode())
    provider = SignedProvider(issuer=ISS, client_id=CLIENT, client_secret="s", redirect_uri=URL + "/auth/callback",
                              ca_file=None, verifier=Verifier(issuer=ISS, client_id=CLIENT, jwks=jwks,
                                                              algorithms=("RS256",)), acr="eid-card-otp")
    settings = Settings(tmp_path / "home")
    roster = Roster((RosterEntry(GRETA, None, "test"), RosterEntry(OLOF, None, "test")))
    config = ConsoleConfig(settings=settings, provider=provider, public_url=URL, roster=roster,
                           inventory_name="lab", inventory_path=tmp_path / "inventory.yaml")
    return TestClient(create_console(config), base_url=URL), provider, settings


def sign_in(client: TestClient, provider: SignedProvider, sub: str, **kw: Any) -> Any:
    r = client.get("/login", follow_redirects=False)
    assert r.status_code == 303
    q = parse_qs(urlsplit(r.headers["location"]).query)
    assert q["code_challenge_method"] == ["S256"] and q["response_type"] == ["code"]
    assert q["redirect_uri"] == [URL + "/auth/callback"] and q["acr_values"] == ["eid-card-otp"]
    code = f"code-{len(provider.codes)}-{sub}"
    provider.codes[code] = mint(sub, q["nonce"][0], **kw)
    return client.get("/auth/callback", params={"code": code, "state": q["state"][0]}, follow_redirects=False)


def csrf_of(html: str) -> str:
    return html.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def test_an_officer_signs_in_and_the_cookie_is_strict(console: Any) -> None:
    client, provider, _ = console
    r = sign_in(client, provider, GRETA.subject)
    assert r.status_code == 200 and 'http-equiv="refresh"' in r.text
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE + "="))
    for attr in ("Secure", "HttpOnly", "SameSite=strict", "Path=/"):
        assert attr.lower() in cookie.lower()
    page = client.get("/")
    assert "Greta Officer (Torsby)" in page.text and "Sign out" in page.text
    csp = page.headers["content-security-policy"]
    assert "form-action 'self' https://localhost:8443" in csp and "script-src" not in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "same-origin"  # else browsers send "Origin: null" on our forms
    for path, text in (("/attestations", "a.restore-test"), ("/log", "no audit log yet"),
                       ("/report", "no report under"), ("/waivers", "No waivers")):
        r = client.get(path)
        assert r.status_code == 200 and text in r.text, path


@pytest.mark.parametrize(("kw", "why"), [
    ({"acr": "1", "amr": ("pwd",)}, "e-ID card and a one-time code"),
    ({"roles": ("socialcare-user",)}, "not a security officer"),
    ({"key": RealmKey("other")}, "does not verify")])
def test_sign_in_is_refused_with_the_reason(console: Any, kw: dict[str, Any], why: str) -> None:
    client, provider, _ = console
    r = sign_in(client, provider, GRETA.subject, **kw)
    assert r.status_code == 403 and why in r.text
    assert SESSION_COOKIE not in r.headers.get("set-cookie", "")


def test_an_officer_not_in_the_roster_is_refused(console: Any) -> None:
    client, provider, _ = console
    r = sign_in(client, provider, "5e1f0a11-0000-4000-8000-00000000ffff")
    assert r.status_code == 403 and "officer roster" in r.text


def test_a_callback_with_a_foreign_state_or_nonce_is_refused(console: Any) -> None:
    client, provider, _ = console
    r = client.get("/login", follow_redirects=False)
    q = parse_qs(urlsplit(r.headers["location"]).query)
    provider.codes["c1"] = mint(GRETA.subject, "another-nonce")
    assert client.get("/auth/callback", params={"code": "c1", "state": "made-up"}).status_code == 403
    bad = client.get("/auth/callback", params={"code": "c1", "state": q["state"][0]})
    assert bad.status_code == 403 and "nonce" in bad.text
    again = client.get("/auth/callback", params={"code": "c1", "state": q["state"][0]})
    assert again.status_code == 403 and "already used" in again.text  # state is spent


def test_csrf_forged_cookie_and_replay_after_logout(console: Any) -> None:
    client, provider, settings = console
    sign_in(client, provider, GRETA.subject)
    page = client.get("/waivers")
    token = csrf_of(page.text)
    form = {"control": "d.key-files-private", "reason": "HSM in January", "days": "10"}
    assert client.post("/waivers", data=form).status_code == 403
    assert client.post("/waivers", data={**form, "csrf": token[:-1] + "x"}).status_code == 403
    assert client.post("/waivers", data={**form, "csrf": token}, headers={"origin": "https://evil.example"}
                       ).status_code == 403
    assert not settings.audit_log.exists()
    ok = client.post("/waivers", data={**form, "csrf": token}, follow_redirects=False)
    assert ok.status_code == 303 and "requested" in ok.headers["location"]
    sid = client.cookies.get(SESSION_COOKIE)
    out = client.post("/logout", data={"csrf": token}, follow_redirects=False)
    assert out.status_code == 303 and "id_token_hint=" in out.headers["location"]
    assert out.headers["location"].startswith(ISS + "/protocol/openid-connect/logout?")
    client.cookies.set(SESSION_COOKIE, sid, domain="testserver", path="/")
    assert "Sign in with e-ID card" in client.get("/waivers", follow_redirects=True).text
    assert client.post("/waivers", data={**form, "csrf": token}).status_code == 403
    client.cookies.set(SESSION_COOKIE, "A" * 43, domain="testserver", path="/")
    assert client.post("/waivers", data={**form, "csrf": token}).status_code == 403


def test_four_eyes_in_the_console(console: Any, tmp_path: Path) -> None:
    client, provider, settings = console
    sign_in(client, provider, GRETA.subject)
    token = csrf_of(client.get("/waivers").text)
    r = client.post("/waivers", data={"csrf": token, "control": "d.key-files-private", "reason": "HSM", "days": "10"},
                    follow_redirects=False)
    wid = r.headers["location"].split("requested+", 1)[1]
    own = client.post(f"/waivers/{wid}/approve", data={"csrf": token})
    assert own.status_code == 409 and "must not be the requester" in own.text
    other = TestClient(client.app, base_url=URL)
    sign_in(other, provider, OLOF.subject)
    t2 = csrf_of(other.get("/waivers").text)
    assert other.post(f"/waivers/{wid}/approve", data={"csrf": t2}, follow_redirects=False).status_code == 303
    assert "approved by Olof Officer (Sunne)" in other.get("/waivers").text
    entries = [json.loads(line) for line in settings.audit_log.read_text().splitlines() if line.strip()]
    blocks = [e["data"]["officer"] for e in entries if e.get("event", "").startswith("waiver.")]
    assert [(b["id"], b["via"]) for b in blocks] == [("greta.officer", "sso"), ("olof.officer", "sso")]


def test_pages_need_a_session(console: Any) -> None:
    client, provider, _ = console
    assert client.get("/trend.png").status_code == 403
    for path in ("/waivers", "/report", "/log", "/attestations"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"
    sign_in(client, provider, GRETA.subject)
    chart = client.get("/trend.png")
    assert chart.status_code == 200 and chart.headers["content-type"] == "image/png"


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SKYDD_CONSOLE_CLIENT_SECRET"}
    return subprocess.run([SKYDD, "console", *args], capture_output=True, text=True, timeout=60,
                          env={**env, "SKYDD_HOME": str(home)})


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    no_idp = tmp_path / "inventory.yaml"
    no_idp.write_text("name: t\nmunicipalities: [{id: torsby, name: Torsby}]\n"
                      "sites: [{id: torsby, name: Torsby, municipality: torsby}]\n")
    for args, why in [(("--inventory", str(tmp_path / "missing.yaml")), "cannot read inventory"),
                      (("--inventory", str(no_idp)), "no identity_provider"),
                      (("--inventory", str(no_idp), "--host", "0.0.0.0"), "loopback only"),
                      (("--inventory", str(no_idp), "--tls-cert", str(no_idp)), "both --tls-cert and --tls-key")]:
        r = cli(tmp_path / "home", *args)
        assert r.returncode == 2, (args, r.stderr)
        assert why in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_trend_counts_each_level_per_audit_newest_first(tmp_path: Path) -> None:
    from audit.history import History
    from skydd.web.console.data import trend

    settings = Settings(tmp_path / "home")
    findings = [{"control": "d.otp-policy", "target": "kc", "status": "fail"},
                {"control": "d.password-policy", "target": "kc", "status": "pass"},
                {"control": "a.backups", "target": "h1", "status": "pass"}]
    with History(settings.history_url) as h:
        for n, at in enumerate(("2026-12-01T10:00:00Z", "2026-12-02T10:00:00Z")):
            fs = findings if n == 0 else [{**f, "status": "pass"} for f in findings]
            h.record({"id": f"r{n}", "inventory": {"name": "lab"}, "generated_at": at,
                      "summary": {"status": "noncompliant" if n == 0 else "compliant"}, "findings": fs})
    t = trend(settings, "lab")
    assert t.problem is None and [a["id"] for a in t.audits] == ["r1", "r0"]
    assert t.audits[1]["levels"]["d"] == {"fail": 1, "pass": 1} and t.audits[0]["levels"]["d"] == {"pass": 2}
    assert t.audits[0]["levels"]["a"] == {"pass": 1} and t.audits[0]["levels"]["e"] == {}
    assert trend(settings, None).problem is not None
    from skydd.web.console.data import Trend, trend_png

    png = trend_png(t)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    flat = Trend(None, t.levels, [{**a, "levels": {lv: {"pass": 1} for lv in t.levels}} for a in t.audits])
    assert trend_png(flat) != png  # the lines follow the data
    assert trend_png(Trend(None, t.levels, [])).startswith(b"\x89PNG")  # no audits: an empty chart


def test_an_unreachable_identity_provider_is_a_clear_refusal() -> None:
    jwks = JwksCache(lambda: b'{"keys": []}')
    provider = Provider(issuer="https://127.0.0.1:9/realms/x", client_id=CLIENT, client_secret="s",
                        redirect_uri=URL + "/auth/callback", ca_file=None,
                        verifier=Verifier(issuer=ISS, client_id=CLIENT, jwks=jwks, algorithms=("RS256",)),
                        acr="eid-card-otp")
    with pytest.raises(LoginError, match="cannot be reached"):
        provider.exchange("code", "verifier")


def test_attestations_due_expired_and_missing(tmp_path: Path) -> None:
    from datetime import timedelta

    from skydd.web.console.data import attestations_view

    home = tmp_path / "home"
    evidence = tmp_path / "drill.pdf"
    evidence.write_bytes(b"minutes of the failover drill")
    soon = (datetime.now(UTC) + timedelta(days=10)).strftime("%Y-%m-%d")
    later = (datetime.now(UTC) + timedelta(days=200)).strftime("%Y-%m-%d")
    for control, until in (("a.failover-drill", soon), ("c.in-building", later)):
        r = subprocess.run([SKYDD, "attest", control, "--evidence", str(evidence), "--expires", until],
                           capture_output=True, text=True, timeout=60, env={**os.environ, "SKYDD_HOME": str(home)})
        assert r.returncode == 0, r.stderr
    now = datetime.now(UTC)
    states = {r.control: r.state for r in attestations_view(Settings(home), now)}
    assert states == {"a.failover-drill": "due", "c.in-building": "valid", "a.restore-test": "missing"}
    later_states = {r.control: r.state for r in attestations_view(Settings(home), now + timedelta(days=11))}
    assert later_states["a.failover-drill"] == "expired"
    rows = attestations_view(Settings(home), now + timedelta(days=11))
    assert [r.state for r in rows] == ["expired", "missing", "valid"]  # worst first
