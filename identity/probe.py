"""The live login probe: drives Keycloak's real browser login with ``requests``.

Each scenario answers whatever the login pages ask with the credentials it holds (a card
certificate over mTLS, a password, a TOTP code, a wrong code) and records whether an
authorization code and tokens came out. Scenarios: success with card+OTP; refusal without a card,
with a revoked card, with a card from another CA, with a wrong OTP, with a password alone, and
through a direct grant; lockout after repeated wrong codes (on a dedicated user).

OTP is enrolled through the CONFIGURE_TOTP required action when Keycloak asks for it; the secret
is kept in the probe's state folder. The success token is saved there too (0600) so a lab test of
the access decision can use a real token. Time comes from the injected ``clock``.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlparse

import jwt
import requests

from .keycloak_admin import KeycloakAdmin, KeycloakAdminError
from .totp import OtpPolicy, OtpStore, b32_of_raw

MAX_STEPS = 8
MAX_LOCKOUT_ATTEMPTS = 10  # a threshold above this is a failing policy anyway


class ProbeError(Exception):
    """The probe could not run at all (Keycloak unreachable, lab files missing)."""


@dataclass(frozen=True)
class ProbeSettings:
    url: str
    realm: str
    ca_file: str | None
    client_id: str
    redirect_uri: str
    username: str
    lockout_username: str
    password: str
    card: Path  # stem: .pem and .key beside it
    revoked_card: Path
    foreign_card: Path
    lockout_card: Path
    state_dir: Path


@dataclass
class Attempt:
    """One login attempt and what the pages asked for."""

    outcome: str = "refused"  # success | refused
    pages: list[str] = field(default_factory=list)
    detail: str = ""
    claims: dict[str, Any] = field(default_factory=dict)
    tokens: dict[str, Any] = field(default_factory=dict)

    def as_evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {"outcome": self.outcome, "pages": self.pages, "detail": self.detail}
        if self.claims:
            out["claims"] = {k: self.claims.get(k) for k in
                             ("acr", "amr", "aud", "azp", "typ", "groups", "hsaId", "auth_time",
                              "preferred_username", "realm_access")}
        return out


# -- HTML forms ---------------------------------------------------------------------------------

class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._in_error = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"id": a.get("id", ""), "action": html.unescape(a.get("action", "")),
                               "inputs": {}, "names": set()})
        elif tag == "input" and self.forms:
            name = a.get("name")
            if name:
                self.forms[-1]["names"].add(name)
                radio = a.get("type") == "radio"
                if a.get("type") in ("hidden",) or (radio and "checked" in a) \
                        or (radio and name not in self.forms[-1]["inputs"]):
                    self.forms[-1]["inputs"][name] = a.get("value", "")
        cls = a.get("class", "") + " " + a.get("id", "")
        if any(k in cls for k in ("kc-feedback-text", "alert-error", "pf-m-danger", "kc-error-message",
                                  "input-error", "pf-m-error")):
            self._in_error += 1

    def handle_endtag(self, tag: str) -> None:
        if self._in_error and tag in ("span", "div", "p"):
            self._in_error -= 1

    def handle_data(self, data: str) -> None:
        if self._in_error and data.strip():
            self.errors.append(data.strip())


def _parse(page: str) -> _Forms:
    p = _Forms()
    p.feed(page)
    return p


# -- the probe ----------------------------------------------------------------------------------

class LoginProbe:
    def __init__(self, settings: ProbeSettings, admin: KeycloakAdmin, *,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        self.s = settings
        self.admin = admin
        self.clock = clock
        self.sleep = sleep
        self.otp = OtpStore(settings.state_dir / "otp")
        self.base = f"{settings.url}/realms/{settings.realm}/protocol/openid-connect"
        realm = admin.realm_settings()
        self.policy = OtpPolicy(int(realm.get("otpPolicyDigits", 6)), int(realm.get("otpPolicyPeriod", 30)),
                                realm.get("otpPolicyAlgorithm", "HmacSHA1"))
        self.failure_factor = int(realm.get("failureFactor") or 5)
        self.lockout_attempts = min(self.failure_factor, MAX_LOCKOUT_ATTEMPTS)
        client = admin.client_by_client_id(settings.client_id)
        if client is None:
            raise ProbeError(f"no client {settings.client_id!r} in realm {settings.realm}")
        self.client_secret = None if client.get("publicClient") else admin.client_secret(settings.client_id)
        for stem in (settings.card, settings.revoked_card, settings.foreign_card, settings.lockout_card):
            if not _pem(stem).exists() or not _key(stem).exists():
                raise ProbeError(f"probe card {stem} (.pem/.key) is missing")

    # -- one login ---------------------------------------------------------------------------
    def login(self, username: str, *, card: Path | None, password: bool, otp: str,
              enroll: bool = False) -> Attempt:
        """``otp``: "right", "wrong" or "none"; ``password``: answer a password form."""
        attempt = Attempt()
        sess = requests.Session()
        sess.trust_env = False  # REQUESTS_CA_BUNDLE would override the lab CA below
        sess.verify = self.s.ca_file or True
        if card is not None:
            sess.cert = (str(_pem(card)), str(_key(card)))
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        query = {"client_id": self.s.client_id, "redirect_uri": self.s.redirect_uri,
                 "response_type": "code", "scope": "openid", "state": secrets.token_urlsafe(16),
                 "nonce": secrets.token_urlsafe(16), "code_challenge": challenge,
                 "code_challenge_method": "S256"}
        try:
            r = sess.get(f"{self.base}/auth?{urlencode(query)}", allow_redirects=False, timeout=30)
            for _ in range(MAX_STEPS):
                code = self._code_of(r)
                if code:
                    return self._exchange(sess, code, verifier, attempt)
                if r.status_code in (301, 302, 303):
                    r = sess.get(urljoin(r.url, r.headers["Location"]), allow_redirects=False, timeout=30)
                    continue
                page = _parse(r.text)
                form, data, label = self._answer(page, username, password, otp, enroll)
                if form is None:
                    attempt.pages.append("error")
                    attempt.detail = "; ".join(page.errors) or f"HTTP {r.status_code}: no form to answer"
                    return attempt
                attempt.pages.append(label)
                if data is None:
                    attempt.detail = f"the login asked for {label}, which this attempt does not hold"
                    return attempt
                r = sess.post(urljoin(r.url, form["action"]), data=data, allow_redirects=False, timeout=30)
            attempt.detail = f"no authorization code after {MAX_STEPS} steps"
        except requests.exceptions.SSLError as err:
            attempt.pages.append("tls")
            attempt.detail = f"TLS handshake refused: {type(err).__name__}"
        except requests.RequestException as err:
            raise ProbeError(f"cannot reach {self.s.url}: {err}") from err
        return attempt

    def _code_of(self, r: requests.Response) -> str | None:
        loc = r.headers.get("Location", "")
        if r.status_code in (302, 303) and loc.startswith(self.s.redirect_uri):
            q = parse_qs(urlparse(loc).query)
            return q.get("code", [None])[0]
        return None

    def _answer(self, page: _Forms, username: str, password: bool, otp: str, enroll: bool
                ) -> tuple[dict[str, Any] | None, dict[str, str] | None, str]:
        for form in page.forms:
            names, data = form["names"], dict(form["inputs"])
            if "totpSecret" in names or form["id"] == "kc-totp-settings-form":
                if not enroll:
                    return form, None, "otp-enrolment"
                b32 = b32_of_raw(data["totpSecret"])
                self.otp.save(username, b32)
                code, wait = self.otp.next_code(username, self.clock(), self.policy)
                self.sleep(wait)
                data.update({"totp": code, "userLabel": "skydd-probe"})
                return form, data, "otp-enrolment"
            if "otp" in names or form["id"] == "kc-otp-login-form":
                if otp == "none" or self.otp.secret(username) is None:
                    return form, None, "otp"
                code, wait = self.otp.next_code(username, self.clock(), self.policy,
                                                consume=otp == "right")
                if otp == "right":
                    self.sleep(wait)
                data["otp"] = code if otp == "right" else OtpStore.wrong_code(code)
                return form, data, "otp"
            if "password" in names and "username" in names:
                if not password:
                    return form, None, "password"
                data.update({"username": username, "password": self.s.password if otp != "wrong"
                             else self.s.password + "-wrong"})
                return form, data, "password"
            if "password" in names and form["id"] == "kc-form-login":
                return form, ({**data, "password": self.s.password} if password else None), "password"
            if form["id"] in ("kc-x509-login-info",) or ("login" in names and "cancel" in names):
                return form, {**data, "login": "login"}, "card-confirmation"
        return None, None, "error"

    def _exchange(self, sess: requests.Session, code: str, verifier: str, attempt: Attempt) -> Attempt:
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.s.redirect_uri,
                "client_id": self.s.client_id, "code_verifier": verifier}
        if self.client_secret:
            data["client_secret"] = self.client_secret
        r = sess.post(f"{self.base}/token", data=data, timeout=30)
        if r.status_code != 200:
            attempt.detail = f"code exchange refused: HTTP {r.status_code} {r.text[:200]}"
            return attempt
        tokens = r.json()
        attempt.outcome = "success"
        attempt.tokens = tokens
        attempt.claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
        attempt.detail = "authorization code exchanged for tokens"
        return attempt

    def direct_grant(self, username: str) -> Attempt:
        attempt = Attempt(pages=["direct-grant"])
        data = {"grant_type": "password", "client_id": self.s.client_id, "username": username,
                "password": self.s.password, "scope": "openid"}
        if self.client_secret:
            data["client_secret"] = self.client_secret
        if self.otp.secret(username):
            data["totp"] = self.otp.next_code(username, self.clock(), self.policy, consume=False)[0]
        try:
            r = requests.post(f"{self.base}/token", data=data, timeout=30, verify=self.s.ca_file or True)
        except requests.RequestException as err:
            raise ProbeError(f"cannot reach {self.s.url}: {err}") from err
        if r.status_code == 200:
            attempt.outcome = "success"
            attempt.detail = "the password grant issued tokens"
        else:
            body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
            attempt.detail = (f"HTTP {r.status_code}: {body.get('error', '')} "
                              f"{body.get('error_description', '')}").strip()
        return attempt

    # -- scenarios ---------------------------------------------------------------------------
    def _reset(self, username: str) -> str:
        user = self.admin.user_by_username(username)
        if user is None:
            raise ProbeError(f"probe user {username!r} does not exist in realm {self.s.realm}")
        self.admin.clear_brute_force(user["id"])
        if self.otp.secret(username) is None:  # an OTP credential we hold no secret for: start over
            for cred in self.admin.credentials(user["id"]):
                if cred.get("type") == "otp":
                    self.admin.delete_credential(user["id"], cred["id"])
        user_id: str = user["id"]
        return user_id

    def run(self) -> dict[str, Any]:
        """Every scenario; returns the ``keycloak.probe`` evidence."""
        s = self.s
        try:
            user_id = self._reset(s.username)
            lock_id = self._reset(s.lockout_username)
        except KeycloakAdminError as err:
            raise ProbeError(str(err)) from err
        results: dict[str, Any] = {}
        success = self.login(s.username, card=s.card, password=False, otp="right", enroll=True)
        if success.outcome == "success" and "otp-enrolment" in success.pages:
            # enrolment completes the login without the OTP form's amr reference: log in again
            self.admin.logout_user(user_id)
            success = self.login(s.username, card=s.card, password=False, otp="right")
        results["card_otp"] = success.as_evidence()
        if success.outcome == "success":
            self._save_token(success)
        results["wrong_otp"] = self.login(s.username, card=s.card, password=True,
                                          otp="wrong").as_evidence()
        results["no_card"] = self.login(s.username, card=None, password=True, otp="right").as_evidence()
        results["password_alone"] = self.login(s.username, card=None, password=True,
                                               otp="none").as_evidence()
        results["revoked_card"] = self.login(s.username, card=s.revoked_card, password=True,
                                             otp="right").as_evidence()
        results["foreign_card"] = self.login(s.username, card=s.foreign_card, password=True,
                                             otp="right").as_evidence()
        results["direct_grant"] = self.direct_grant(s.username).as_evidence()
        self.admin.clear_brute_force(user_id)
        results["lockout"] = self._lockout(lock_id)
        return {"client_id": s.client_id, "username": s.username, "failure_factor": self.failure_factor,
                "scenarios": results}

    def _lockout(self, user_id: str) -> dict[str, Any]:
        s = self.s
        # enrol first (if needed) so the wrong codes hit the OTP form, then clear the counters
        if self.otp.secret(s.lockout_username) is None:
            self.login(s.lockout_username, card=s.lockout_card, password=False, otp="right", enroll=True)
        self.admin.clear_brute_force(user_id)
        wrong = [self.login(s.lockout_username, card=s.lockout_card, password=True, otp="wrong")
                 for _ in range(self.lockout_attempts)]
        status = self.admin.brute_force_status(user_id)
        after = self.login(s.lockout_username, card=s.lockout_card, password=True, otp="right")
        self.admin.clear_brute_force(user_id)
        return {"wrong_attempts": len(wrong), "wrong_pages": sorted({p for a in wrong for p in a.pages}),
                "locked": bool(status.get("disabled")), "failures": status.get("numFailures"),
                "after_lock": after.as_evidence()}

    def _save_token(self, success: Attempt) -> None:
        d = self.s.state_dir
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name, value in (("success-token.json", json.dumps(
                {**success.tokens, "obtained_at": int(self.clock())}, indent=2)),
                ("access-token", success.tokens["access_token"])):
            tmp = d / f".{name}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(value)
            tmp.replace(d / name)


def _pem(stem: Path) -> Path:
    return stem.with_name(stem.name + ".pem")


def _key(stem: Path) -> Path:
    return stem.with_name(stem.name + ".key")
