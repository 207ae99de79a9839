"""The login probe's page reading and its TOTP store (no Keycloak needed)."""

from __future__ import annotations

import pyotp
import pytest

from identity.probe import _parse
from identity.totp import OtpPolicy, OtpStore, b32_of_raw

OTP_PAGE = """<html><body>
<form id="kc-otp-login-form" class="pf-v5-c-form"
 action="https://localhost:8443/realms/s/login-actions/authenticate?session_code=a&amp;execution=b&amp;client_id=c"
 method="post">
  <input id="otp" name="otp" autocomplete="off" type="text" autofocus />
  <input type="hidden" name="selectedCredentialId" value="cred-1"/>
  <input type="submit" name="login" value="Sign In"/>
</form></body></html>"""

ERROR_PAGE = """<html><body><div class="pf-v5-c-alert pf-m-danger"><span class="kc-feedback-text">
Invalid username or password.</span></div></body></html>"""


def test_otp_form_action_is_unescaped_and_hidden_inputs_kept() -> None:
    page = _parse(OTP_PAGE)
    (form,) = page.forms
    assert form["id"] == "kc-otp-login-form"
    assert "&amp;" not in form["action"] and "execution=b&client_id=c" in form["action"]
    assert form["inputs"] == {"selectedCredentialId": "cred-1"}
    assert {"otp", "login"} <= form["names"]


def test_error_text_is_read() -> None:
    assert _parse(ERROR_PAGE).errors == ["Invalid username or password."]


def test_totp_store_never_reuses_a_step(tmp_path) -> None:
    store = OtpStore(tmp_path / "otp")
    secret = b32_of_raw("abcdefghij0123456789")
    store.save("probe", secret)
    now = 1_700_000_010.0  # inside one 30 s step
    first, wait1 = store.next_code("probe", now)
    second, wait2 = store.next_code("probe", now)
    third, wait3 = store.next_code("probe", now)
    totp = pyotp.TOTP(secret)
    assert first == totp.at(now) and wait1 == 0
    assert second == totp.at(now + 30) and wait2 == 0  # one step ahead is accepted at once
    assert third == totp.at(now + 60) and wait3 == pytest.approx(30 - now % 30)
    assert (tmp_path / "otp" / "probe.json").stat().st_mode & 0o777 == 0o600


def test_peek_does_not_consume_and_wrong_code_differs(tmp_path) -> None:
    store = OtpStore(tmp_path / "otp")
    store.save("p", b32_of_raw("raw-secret-raw-secret"))
    a, _ = store.next_code("p", 1000.0, consume=False)
    b, _ = store.next_code("p", 1000.0, OtpPolicy())
    assert a == b
    assert OtpStore.wrong_code(a) != a and len(OtpStore.wrong_code(a)) == len(a)
