"""The console's FastAPI application: ``create_console(config)``.

Every page but the sign-in page, the login redirect and the OIDC callback needs a live session;
every POST needs the session's CSRF token (and, when the browser sends one, a same-origin
``Origin``). Handlers are plain functions: FastAPI runs them in its thread pool, so the code
exchange, the log's fsync and the history reads never block the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from estate.errors import SkyddError
from estate.settings import Settings

from ...officers import Officer, Roster
from ..headers import SecurityHeaders
from . import data
from .oidc import LoginError, Provider
from .security import Session, SessionStore, new_id, officer_problems, s256, same

log = logging.getLogger("skydd.console")
SESSION_COOKIE = "__Host-skydd-console"
LOGIN_COOKIE = "__Host-skydd-console-login"
MAX_FORM_BYTES = 64 * 1024
HERE = Path(__file__).parent


@dataclass
class ConsoleConfig:
    settings: Settings
    provider: Provider
    public_url: str  # e.g. https://localhost:8600 (no trailing slash)
    roster: Roster
    inventory_name: str
    inventory_path: Path
    required_acr: str = "eid-card-otp"
    required_amr: tuple[str, ...] = ("sc", "otp")
    role: str = "security-officer"
    idle_seconds: float = 900
    absolute_seconds: float = 8 * 3600
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    @property
    def origin(self) -> str:
        u = urlsplit(self.public_url)
        return f"{u.scheme}://{u.netloc}"

    @property
    def secure_cookies(self) -> bool:
        return True  # https, or http on localhost (a secure context in browsers)


def _origin_of(url: str) -> str:
    u = urlsplit(url)
    return f"{u.scheme}://{u.netloc}"


class _Csp:
    """The console's Content-Security-Policy (its own style sheet, forms to itself and, for
    sign-out, to the identity provider; nothing else) and Referrer-Policy. ``SecurityHeaders``
    adds the rest."""

    def __init__(self, app: Any, policy: str) -> None:
        self.app, self.policy = app, policy.encode("ascii")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_csp(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      (b"content-security-policy", self.policy),
                                      # same-origin, not no-referrer: with no-referrer browsers
                                      # send "Origin: null" on the console's own form posts
                                      (b"referrer-policy", b"same-origin")]
            await send(message)

        await self.app(scope, receive, with_csp)


def create_console(config: ConsoleConfig) -> Any:
    store = SessionStore(idle=config.idle_seconds, absolute=config.absolute_seconds,
                         clock=lambda: config.clock().timestamp())
    env = Environment(loader=FileSystemLoader(HERE / "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    api = FastAPI(title="Skydd console", docs_url=None, redoc_url=None, openapi_url=None)
    api.state.store = store
    css = (HERE / "static" / "console.css").read_bytes()

    def render(name: str, status: int = 200, session: Session | None = None, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(session=session, officer=session.officer if session else None,
                                             csrf=session.csrf if session else "", **context)
        return HTMLResponse(html, status_code=status)

    def refuse(status: int, title: str, reasons: Sequence[str], session: Session | None = None) -> HTMLResponse:
        return render("refused.html", status, session, title=title, reasons=list(reasons))

    def cookie(response: Response, name: str, value: str, *, max_age: int | None, same_site: str) -> None:
        response.set_cookie(name, value, max_age=max_age, path="/", secure=config.secure_cookies,
                            httponly=True, samesite=same_site)  # type: ignore[arg-type]

    def current(request: Request) -> Session | None:
        return store.get(request.cookies.get(SESSION_COOKIE))

    async def form_of(request: Request) -> dict[str, str] | None:
        """The urlencoded body (first value of each field), or None when too large or not a form."""
        if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return None
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_FORM_BYTES:
                return None
        try:
            fields = parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=50)
        except (UnicodeDecodeError, ValueError):
            return None
        return {k: v[0] for k, v in fields.items()}

    async def posted(request: Request) -> tuple[Session, dict[str, str]] | HTMLResponse:
        """The session and form of a POST, or the 403 page: no session, a cross-origin request,
        or a missing or wrong CSRF token."""
        session = current(request)
        if session is None:
            return refuse(403, "Not signed in", ["Your session has ended or was never valid. Sign in again."])
        origin = request.headers.get("origin")
        if origin is not None and origin != config.origin:
            return refuse(403, "Request refused", [f"The form was sent from another origin ({origin[:80]})."],
                          session)
        form = await form_of(request)
        if form is None or not same(form.get("csrf"), session.csrf):
            return refuse(403, "Request refused",
                          ["The form's anti-forgery (CSRF) token is missing or wrong. Reload the page "
                           "and try again."], session)
        return session, form

    # -- sign-in ------------------------------------------------------------------------------
    @api.get("/")
    def home(request: Request) -> Response:
        session = current(request)
        if session is None:
            return render("signin.html", issuer=config.provider.issuer)
        view = data.matrix_view(config.settings)
        name = (view.report.get("inventory") or {}).get("name") if view.report else None
        return render("matrix.html", session=session, view=view, trend=data.trend(config.settings, name))

    @api.get("/login")
    def login() -> Response:
        binding = new_id()
        pending = store.begin_login(binding)
        response = RedirectResponse(config.provider.authorize_url(pending.state, pending.nonce,
                                                                  s256(pending.verifier)), 303)
        # Lax: the browser must send it back on the top-level redirect from the identity provider
        cookie(response, LOGIN_COOKIE, binding, max_age=600, same_site="lax")
        return response

    @api.get("/auth/callback")
    def callback(request: Request) -> Response:
        q = request.query_params
        pending = store.take_login(q.get("state"), request.cookies.get(LOGIN_COOKIE))
        if pending is None:
            return refuse(403, "Sign-in refused", [
                "This sign-in was not started in this browser, was already used, or is older than "
                "10 minutes (state and login cookie do not match)."])
        if q.get("error"):
            return refuse(403, "Sign-in refused", [
                f"The identity provider refused the sign-in: {(q.get('error') or '')[:60]} "
                f"{(q.get('error_description') or '')[:200]}"])
        code = q.get("code")
        if not code:
            return refuse(403, "Sign-in refused", ["The identity provider returned no authorization code."])
        try:
            tokens = config.provider.exchange(code, pending.verifier)
            access, id_claims = config.provider.verify(tokens, pending.nonce, config.clock())
        except LoginError as err:
            return refuse(403, "Sign-in refused", [str(err)])
        problems = officer_problems(access.claims, access.roles, required_acr=config.required_acr,
                                    required_amr=config.required_amr, role=config.role)
        subject = str(access.claims["sub"])
        entry = config.roster.by_subject(subject)
        if config.roster and entry is None:
            problems.append(f"the account ({access.username}) is not in the inventory's officer roster")
        if problems:
            log.warning("console sign-in refused for %s: %s", subject, "; ".join(problems))
            return refuse(403, "Not a security officer with card and one-time code", problems)
        name = entry.officer.name if entry else str(id_claims.get("name") or access.username)
        officer = Officer(subject=subject, name=name, id=entry.officer.id if entry else None)
        session = store.create(officer, tokens["id_token"], access.claims)
        # A same-site page, not a redirect: a SameSite=Strict cookie set at the end of a
        # cross-site redirect chain is not sent on the next hop, but is on a refresh from here.
        response = render("signed_in.html", who=officer)
        cookie(response, SESSION_COOKIE, session.id, max_age=None, same_site="strict")
        response.delete_cookie(LOGIN_COOKIE, path="/", secure=True, httponly=True, samesite="lax")
        return response

    @api.post("/logout")
    async def logout(request: Request) -> Response:
        result = await posted(request)
        if isinstance(result, HTMLResponse):
            return result
        session, _ = result
        store.drop(session.id)
        response = RedirectResponse(config.provider.logout_url(session.id_token, config.public_url + "/"), 303)
        response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    # -- pages --------------------------------------------------------------------------------
    def page(request: Request, name: str, **context: Any) -> Response:
        session = current(request)
        if session is None:
            return RedirectResponse("/", 303)
        return render(name, session=session, **context)

    @api.get("/waivers")
    def waivers(request: Request) -> Response:
        return page(request, "waivers.html", ledger=data.waivers_view(config.settings, config.roster),
                    controls=data.control_ids(), message=request.query_params.get("done"))

    @api.post("/waivers")
    async def request_waiver(request: Request) -> Response:
        result = await posted(request)
        if isinstance(result, HTMLResponse):
            return result
        session, form = result
        try:
            days = int(form.get("days") or "30")
            at = config.clock()
            w = await _threaded(data.request, config.settings, form.get("control", "").strip(),
                                form.get("target", "").strip() or None, form.get("reason", ""),
                                at + timedelta(days=days), session.officer, at)
        except (ValueError, SkyddError) as err:
            return refuse(400, "Waiver not requested", [_one_line(err)], session)
        return RedirectResponse(f"/waivers?done=requested+{w.id}", 303)

    @api.post("/waivers/{waiver_id}/approve")
    async def approve(waiver_id: str, request: Request) -> Response:
        result = await posted(request)
        if isinstance(result, HTMLResponse):
            return result
        session, _ = result
        try:
            w = await _threaded(data.approve, config.settings, waiver_id, session.officer,
                                config.clock(), config.roster)
        except SkyddError as err:
            return refuse(409, "Waiver not approved", [_one_line(err)], session)
        return RedirectResponse(f"/waivers?done=approved+{w.id}", 303)

    @api.get("/report")
    def report(request: Request) -> Response:
        return page(request, "report.html", view=data.report_view(config.settings, config.roster),
                    message=request.query_params.get("done"))

    @api.post("/report/sign-off")
    async def report_sign_off(request: Request) -> Response:
        result = await posted(request)
        if isinstance(result, HTMLResponse):
            return result
        session, form = result
        try:
            s = await _threaded(data.sign_off, config.settings, form.get("digest", ""), session.officer,
                                form.get("comment", ""), config.clock())
        except SkyddError as err:
            return refuse(409, "Report not signed off", [_one_line(err)], session)
        return RedirectResponse(f"/report?done=signed+off+{s.digest[:19]}", 303)

    @api.get("/trend.png")
    def trend_chart(request: Request) -> Response:
        if current(request) is None:
            return Response(b"", status_code=403)
        view = data.report_view(config.settings)
        name = (view.report.get("inventory") or {}).get("name") if view.report else None
        return Response(data.trend_png(data.trend(config.settings, name)), media_type="image/png")

    @api.get("/attestations")
    def attestations(request: Request) -> Response:
        return page(request, "attestations.html", rows=data.attestations_view(config.settings, config.clock()),
                    due_days=data.DUE_DAYS)

    @api.get("/log")
    def audit_log(request: Request) -> Response:
        return page(request, "log.html", view=data.log_view(config.settings))

    @api.get("/static/console.css")
    def stylesheet() -> Response:
        return Response(css, media_type="text/css")

    csp = ("default-src 'none'; style-src 'self'; img-src 'self' data:; "
           f"form-action 'self' {_origin_of(config.provider.issuer)}; frame-ancestors 'none'; "
           "base-uri 'none'")
    return SecurityHeaders(_Csp(api, csp))


async def _threaded(fn: Callable[..., Any], *args: Any) -> Any:
    from anyio import to_thread

    return await to_thread.run_sync(lambda: fn(*args))


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__

