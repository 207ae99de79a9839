"""``POST /v1/decision`` (FastAPI) and ``GET /v1/authz`` (forward-auth for a reverse proxy, a plain
ASGI handler: the hot path pays for no routing, request or response objects).

Stateless: every request carries its token; the only memory is the JWKS cache and the verifier's
set of already-verified tokens, both safe to lose. Decisions run on the event loop (they are CPU
only, well under a millisecond) unless the verifier would have to fetch the JWKS, which then runs
in the thread pool so a slow identity provider cannot stall other requests; writing a deny to the
audit log (a disk sync) runs in the thread pool too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from identity.decision import AccessDecision, Decision
from identity.tokens import MAX_TOKEN_BYTES

from ..deny_log import DenyLog
from .headers import SECURITY_HEADERS

Clock = Callable[[], datetime]
MAX_BODY_BYTES = MAX_TOKEN_BYTES + 1024
_UNAUTHORIZED = (b"www-authenticate", b'Bearer realm="skydd"')
_INVALID = (b"www-authenticate", b'Bearer realm="skydd", error="invalid_token"')


class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=MAX_TOKEN_BYTES)


def bearer_value(value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` value, or ``None``."""
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def bearer(request: Request) -> str | None:
    return bearer_value(request.headers.get("authorization"))


def header_value(value: str) -> str:
    """A claim as a header value: printable ASCII kept, anything else percent-encoded, so a
    claim can never split or inject a header."""
    return quote(value, safe="@.-_+:/ ()")[:256]


def _json(body: dict[str, object], status: int) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status_code=status,
                    media_type="application/json")


async def decide(decider: AccessDecision, deny_log: DenyLog, token: str, at: datetime) -> Decision:
    """The decision for ``token`` at ``at``; JWKS fetches and deny-log writes off the event loop."""
    if decider.verifier.would_fetch(token, at):
        decision = await to_thread.run_sync(decider.decide, token, at)
    else:
        decision = decider.decide(token, at)
    if not decision.allow:  # the audit log syncs to disk: off the event loop
        await to_thread.run_sync(deny_log.record, decision)
    return decision


def router(decider: AccessDecision, deny_log: DenyLog, clock: Clock) -> APIRouter:
    api = APIRouter()

    @api.post("/v1/decision")
    async def post_decision(request: Request) -> Response:
        token = bearer(request)
        if token is None:
            raw = bytearray()
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > MAX_BODY_BYTES:
                    return _json({"error": f"the body is larger than {MAX_BODY_BYTES} bytes"}, 413)
            try:
                body = DecisionRequest.model_validate_json(bytes(raw))
            except ValueError:
                return _json({"error": "send {\"token\": \"…\"} or an Authorization: Bearer header"},
                             400)
            token = body.token
        return _json((await decide(decider, deny_log, token, clock())).to_dict(), 200)

    @api.get("/v1/health")
    async def health() -> Response:
        return _json({"status": "ok"}, 200)

    return api


Headers = list[tuple[bytes, bytes]]
_JSON_TYPE = (b"content-type", b"application/json")
_ALLOWED = [(b"content-length", b"0"), (b"x-skydd-decision", b"allow")]
_MISSING = json.dumps({"decision": "deny", "reasons": [{"code": "token", "cause": "missing"}]},
                      separators=(",", ":")).encode()
_AMBIGUOUS = json.dumps({"decision": "deny", "reasons": [
    {"code": "token", "cause": "ambiguous", "message": "more than one Authorization header"}]},
    separators=(",", ":")).encode()
_NOT_ALLOWED = b'{"detail":"Method Not Allowed"}'


class ForwardAuth:
    """``GET /v1/authz`` as a plain ASGI app: 200 with ``x-skydd-*`` identity headers when
    allowed; 401 with ``WWW-Authenticate`` when no token or the token does not verify; 403 when
    denied; 503 when the keys are unavailable. Security headers on every response."""

    def __init__(self, decider: AccessDecision, deny_log: DenyLog, clock: Clock) -> None:
        self.decider, self.deny_log, self.clock = decider, deny_log, clock

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        head = scope["method"] == "HEAD"
        if scope["method"] not in ("GET", "HEAD"):
            await _send(send, 405, [_JSON_TYPE, (b"allow", b"GET, HEAD")], _NOT_ALLOWED, head)
            return
        values = [v for k, v in scope["headers"] if k == b"authorization"]
        if len(values) > 1:  # which one would the application behind the proxy read?
            await _send(send, 401, [_JSON_TYPE, _INVALID], _AMBIGUOUS, head)
            return
        token = bearer_value(values[0].decode("latin-1")) if values else None
        if token is None:
            await _send(send, 401, [_JSON_TYPE, _UNAUTHORIZED], _MISSING, head)
            return
        decision = await decide(self.decider, self.deny_log, token, self.clock())
        if decision.allow:
            await _send(send, 200, _identity(decision), b"", head)
            return
        body = json.dumps({"decision": "deny", "reasons": [r.to_dict() for r in decision.reasons]},
                          separators=(",", ":")).encode()
        if decision.verified:
            await _send(send, 403, [_JSON_TYPE], body, head)
        elif decision.reasons and decision.reasons[0].cause == "keys_unavailable":
            await _send(send, 503, [_JSON_TYPE], body, head)
        else:
            await _send(send, 401, [_JSON_TYPE, _INVALID], body, head)


def _identity(decision: Decision) -> Headers:
    headers = list(_ALLOWED)
    if decision.user:
        headers.append((b"x-skydd-user", header_value(decision.user).encode("ascii")))
    if decision.hsa_id:
        headers.append((b"x-skydd-hsa-id", header_value(decision.hsa_id).encode("ascii")))
    if decision.municipalities:
        headers.append((b"x-skydd-municipality",
                        header_value(",".join(decision.municipalities)).encode("ascii")))
    return headers


async def _send(send: Any, status: int, headers: Headers, body: bytes, head: bool) -> None:
    if body:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": b"" if head else body})
