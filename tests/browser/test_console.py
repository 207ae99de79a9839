"""The officers' console in a real Chromium against the lab's real Keycloak (hardened to level d):
card (client certificate) + OTP sign-in, the matrix, a waiver requested by one officer and
approved by the other (never by the requester), a report sign-off, and every refusal: a staff
member without the officer role, no card, a forged cookie, a cookie replayed after sign-out, a
POST without the CSRF token.

One Keycloak per session (``ensure_lab``), one console process for the module; the tests run in
order and share the officers' browser contexts.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab.conftest import ensure_lab
from tests.unit.skydd.test_audit_cli import CONTROL, inventory, run

pytestmark = [pytest.mark.browser, pytest.mark.lab]

SKYDD = str(Path(sys.executable).parent / "skydd")
ROOT = Path(__file__).resolve().parents[2]
PORT = 8700
CONSOLE = f"https://localhost:{PORT}"
KEYCLOAK = "https://localhost:8443"


def _wait_port(proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the console exited: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", PORT), timeout=1) as s, ctx.wrap_socket(s):
                return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"the console did not listen on {PORT}: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def lab(lab_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    status = ensure_lab("keycloak", lab_home)
    harden = subprocess.run([SKYDD, "apply", "--level", "d"], env={**os.environ, "SKYDD_HOME": str(lab_home)},
                            capture_output=True, text=True, timeout=900)
    assert harden.returncode == 0, harden.stdout[-2000:] + harden.stderr[-2000:]
    tmp = tmp_path_factory.mktemp("console")
    home = tmp / "home"
    # a real signed (failing) report in the console's home, for the matrix and the sign-off
    ks = tmp / "pki"
    ks.mkdir(mode=0o755)
    (ks / "ca.key").write_text("k")
    (ks / "ca.key").chmod(0o644)
    assert run(home, "audit", "--inventory", str(inventory(tmp, ks)), "--control", CONTROL).returncode == 1
    inv = tmp / "inventory.yaml"
    inv.write_text((ROOT / "skydd" / "lab" / "inventory.yaml").read_text().replace("${SKYDD_HOME}", str(lab_home)))
    c = status["console"]
    log = tmp / "console.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([SKYDD, "console", "--inventory", str(inv), "--port", str(PORT),
                                 "--tls-cert", c["tls_cert"], "--tls-key", c["tls_key"],
                                 "--client-secret", c["client_secret"]],
                                env={**os.environ, "SKYDD_HOME": str(home)}, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_port(proc, log)
        yield {"home": home, "lab_home": lab_home, "otp": Path(c["otp_dir"]), "log": log, "state": {}}
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def goto(page: Any, url: str) -> None:
    """Navigate; other lab tests add and remove network interfaces, which Chromium reports as
    ERR_NETWORK_CHANGED: try again then."""
    for attempt in range(5):
        try:
            page.goto(url)
            return
        except Exception as err:
            if "ERR_NETWORK_CHANGED" not in str(err) or attempt == 4:
                raise
            time.sleep(1)


def _context(browser: Any, lab: dict[str, Any], card: str | None) -> Any:
    certs = []
    if card is not None:
        cards = lab["lab_home"] / "lab" / "pki" / "cards"
        certs = [{"origin": KEYCLOAK, "certPath": str(cards / f"{card}.pem"), "keyPath": str(cards / f"{card}.key")}]
    return browser.new_context(ignore_https_errors=True, client_certificates=certs)


def _otp(lab: dict[str, Any], username: str) -> str:
    from identity.totp import OtpStore

    code, wait = OtpStore(lab["otp"]).next_code(username, time.time())
    time.sleep(wait)
    return code


def sign_in(browser: Any, lab: dict[str, Any], username: str, *, card: bool = True) -> tuple[Any, Any]:
    """A browser context and page after answering Keycloak's card + OTP sign-in as ``username``."""
    ctx = _context(browser, lab, username if card else None)
    page = ctx.new_page()
    goto(page, CONSOLE + "/")
    page.click("#signin")
    page.wait_for_url(re.compile(r"https://localhost:8443/.*"))
    if card:
        page.wait_for_selector("input[name=otp]", timeout=30_000)
        page.fill("input[name=otp]", _otp(lab, username))
        page.click("#kc-login, [type=submit]")
        page.wait_for_url(re.compile(re.escape(CONSOLE) + r"/.*"), timeout=30_000)
        page.wait_for_load_state("networkidle")
    return ctx, page


def expect(page: Any, lab: dict[str, Any], selector: str) -> None:
    """Wait for ``selector``; on failure show where the browser is and the console's log."""
    try:
        page.wait_for_selector(selector, timeout=30_000)
    except Exception as err:
        body = page.locator("body").inner_text() if page.locator("body").count() else page.content()
        raise AssertionError(f"{selector} not shown at {page.url}:\n{body[-1500:]}\n"
                             f"console log:\n{lab['log'].read_text()[-3000:]}") from err


def test_officer_signs_in_with_card_and_otp_and_sees_the_matrix(browser: Any, lab: dict[str, Any]) -> None:
    ctx, page = sign_in(browser, lab, "greta.officer")
    lab["state"]["greta"] = (ctx, page)
    assert page.locator("#matrix").count() == 1, page.url + "\n" + page.locator("main").inner_text()
    assert page.locator(".who").inner_text() == "Greta Officer (Torsby)"
    cell = page.locator('td[data-cell="d/torsby"]')
    assert "status-fail" in (cell.get_attribute("class") or "") and "1 fail" in cell.inner_text()
    assert page.locator("#trend-chart").evaluate("img => img.complete && img.naturalWidth") == 800
    cookies = {c["name"]: c for c in ctx.cookies(CONSOLE)}
    session = cookies["__Host-skydd-console"]
    assert session["secure"] and session["httpOnly"] and session["sameSite"] == "Strict"
    assert len(session["value"]) >= 43 and "__Host-skydd-console-login" not in cookies


def test_officer_requests_a_waiver(lab: dict[str, Any]) -> None:
    _, page = lab["state"]["greta"]
    goto(page, CONSOLE + "/waivers")
    page.fill("#request-waiver input[name=control]", CONTROL)
    page.fill("#request-waiver textarea[name=reason]", "key files move to the HSM in January")
    page.fill("#request-waiver input[name=days]", "20")
    page.click("#request-waiver button")
    expect(page, lab, ".done")
    wid = re.search(r"requested (\S+)", page.locator(".done").inner_text()).group(1)  # type: ignore[union-attr]
    row = page.locator(f'tr[data-waiver="{wid}"]')
    assert "pending" in row.inner_text() and "Greta Officer (Torsby)" in row.inner_text()
    lab["state"]["waiver"] = wid


def test_the_requester_cannot_approve_her_own_waiver(lab: dict[str, Any]) -> None:
    _, page = lab["state"]["greta"]
    wid = lab["state"]["waiver"]
    goto(page, CONSOLE + "/waivers")
    page.click(f'tr[data-waiver="{wid}"] button')
    expect(page, lab, "h1.refused")
    assert "must not be the requester" in page.locator(".reasons").inner_text()
    goto(page, CONSOLE + "/waivers")
    assert "pending" in page.locator(f'tr[data-waiver="{wid}"]').inner_text()


def test_the_second_officer_approves_it(browser: Any, lab: dict[str, Any]) -> None:
    ctx, page = sign_in(browser, lab, "olof.officer")
    wid = lab["state"]["waiver"]
    goto(page, CONSOLE + "/waivers")
    page.click(f'tr[data-waiver="{wid}"] button')
    expect(page, lab, ".done")
    assert "approved by Olof Officer (Sunne)" in page.locator(f'tr[data-waiver="{wid}"]').inner_text()
    log = (lab["home"] / "audit.log").read_text()
    assert '"via":"sso"' in log.replace(" ", "") and "5e1f0a11-0000-4000-8000-000000000002" in log
    ctx.close()


def test_officer_signs_off_the_report_and_the_log_verifies(lab: dict[str, Any]) -> None:
    _, page = lab["state"]["greta"]
    goto(page, CONSOLE + "/report")
    assert "Not signed off" in page.locator("#signoffs").inner_text()
    page.fill("#sign-off textarea[name=comment]", "checked the key store finding")
    page.click("#sign-off button")
    expect(page, lab, ".done")
    assert "Greta Officer (Torsby) (sso)" in page.locator("#signoffs").inner_text()
    goto(page, CONSOLE + "/log")
    assert page.locator("#log-status").inner_text().startswith("Verified")


def test_a_post_without_the_csrf_token_is_refused(lab: dict[str, Any]) -> None:
    ctx, _ = lab["state"]["greta"]
    before = (lab["home"] / "audit.log").read_text()
    r = ctx.request.post(CONSOLE + "/waivers", form={"control": CONTROL, "reason": "forged", "days": "5"},
                         max_redirects=0)
    assert r.status == 403 and "CSRF" in r.text()
    r = ctx.request.post(CONSOLE + "/waivers", form={"control": CONTROL, "reason": "forged", "days": "5",
                                                     "csrf": "x" * 43}, max_redirects=0)
    assert r.status == 403
    assert (lab["home"] / "audit.log").read_text() == before


def test_a_staff_member_without_the_officer_role_gets_403(browser: Any, lab: dict[str, Any]) -> None:
    ctx, page = sign_in(browser, lab, "tove.staff")
    assert page.locator("h1.refused").is_visible()
    assert "not a security officer" in page.locator(".reasons").inner_text()
    assert not any(c["name"] == "__Host-skydd-console" for c in ctx.cookies(CONSOLE))
    ctx.close()


def test_sign_in_without_the_card_is_refused(browser: Any, lab: dict[str, Any]) -> None:
    """Without the card, even with the right password and one-time code, no sign-in reaches the
    console with a code; and no session exists afterwards."""
    ctx = _context(browser, lab, None)
    page = ctx.new_page()
    callbacks: list[str] = []
    page.on("request", lambda r: callbacks.append(r.url) if r.url.startswith(CONSOLE + "/auth/callback") else None)
    goto(page, CONSOLE + "/")
    page.click("#signin")
    page.wait_for_url(re.compile(r"https://localhost:8443/.*"))
    asked = []
    for _ in range(4):  # answer whatever Keycloak asks that a thief without the card could know
        page.wait_for_load_state("networkidle")
        if not page.url.startswith(KEYCLOAK):
            break
        if page.locator("input[name=otp]").count():
            asked.append("otp")
            page.fill("input[name=otp]", _otp(lab, "olof.officer"))
        elif page.locator("input[name=password]").count():
            asked.append("password")
            if page.locator("input[name=username]").count():
                page.fill("input[name=username]", "olof.officer")
            page.fill("input[name=password]",
                      (lab["lab_home"] / "lab" / "keycloak" / "staff-password").read_text().strip())
        else:
            break
        page.click("[type=submit]")
    text = page.locator("body").inner_text()[:300]
    assert not any("code=" in u for u in callbacks), (asked, callbacks, text)
    goto(page, CONSOLE + "/")
    assert page.locator("#signin").is_visible() and page.locator("#matrix").count() == 0
    print(f"without the card Keycloak asked {asked} and ended at {text!r}")
    ctx.close()


def test_a_forged_session_cookie_is_refused(browser: Any) -> None:
    ctx = browser.new_context(ignore_https_errors=True)
    ctx.add_cookies([{"name": "__Host-skydd-console", "value": "A" * 43, "url": CONSOLE + "/",
                      "secure": True, "httpOnly": True, "sameSite": "Strict"}])
    page = ctx.new_page()
    goto(page, CONSOLE + "/waivers")
    assert page.locator("#signin").is_visible()
    r = ctx.request.post(CONSOLE + "/waivers", form={"csrf": "A" * 43, "control": CONTROL, "reason": "x"},
                         max_redirects=0)
    assert r.status == 403 and "Not signed in" in r.text()
    ctx.close()


def test_a_cookie_replayed_after_sign_out_is_refused(browser: Any, lab: dict[str, Any]) -> None:
    ctx, page = lab["state"]["greta"]
    goto(page, CONSOLE + "/waivers")
    old = next(c for c in ctx.cookies(CONSOLE) if c["name"] == "__Host-skydd-console")
    csrf = page.locator("#request-waiver input[name=csrf]").get_attribute("value")
    page.click("header form.logout button")
    page.wait_for_url(CONSOLE + "/", timeout=30_000)
    assert page.locator("#signin").is_visible()
    replay = browser.new_context(ignore_https_errors=True)
    replay.add_cookies([{k: old[k] for k in ("name", "value", "secure", "httpOnly", "sameSite")}
                        | {"url": CONSOLE + "/"}])
    p2 = replay.new_page()
    goto(p2, CONSOLE + "/report")
    assert p2.locator("#signin").is_visible()
    r = replay.request.post(CONSOLE + "/report/sign-off", form={"csrf": csrf or "", "digest": "x"},
                            max_redirects=0)
    assert r.status == 403
    replay.close()
    ctx.close()
