"""``POST /v1/decision`` and ``GET /v1/authz`` (forward-auth for a reverse proxy).

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
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from identity.decision import AccessDecision, Decision
from identity.tokens import MAX_TOKEN_BYTES

from ..deny_log import DenyLog

Clock = Callable[[], datetime]
MAX_BODY_BYTES = MAX_TOKEN_BYTES + 1024
_UNAUTHORIZED = {"www-authenticate": 'Bearer realm="skydd"'}
_INVALID = {"www-authenticate": 'Bearer realm="skydd", error="invalid_token"'}


class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=MAX_TOKEN_BYTES)


def bearer(request: Request) -> str | None:
    value = request.headers.get("authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def header_value(value: str) -> str:
    """A claim as a header value: printable ASCII kept, anything else percent-encoded, so a
    claim can never split or inject a header."""
    return quote(value, safe="@.-_+:/ ()")[:256]


def identity_headers(decision: Decision) -> dict[str, str]:
    headers = {"x-skydd-decision": "allow"}
    if decision.user:
        headers["x-skydd-user"] = header_value(decision.user)
    if decision.hsa_id:
        headers["x-skydd-hsa-id"] = header_value(decision.hsa_id)
    if decision.municipalities:
        headers["x-skydd-municipality"] = header_value(",".join(decision.municipalities))
    return headers


def _json(body: dict[str, object], status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status_code=status,
                    headers=headers, media_type="application/json")


def router(decider: AccessDecision, deny_log: DenyLog, clock: Clock) -> APIRouter:
    api = APIRouter()

    async def decide(token: str) -> Decision:
        at = clock()
        if decider.verifier.would_fetch(token, at):
            decision = await run_in_threadpool(decider.decide, token, at)
        else:
            decision = decider.decide(token, at)
        if not decision.allow:  # the audit log syncs to disk: off the event loop
            await run_in_threadpool(deny_log.record, decision)
        return decision

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
        return _json((await decide(token)).to_dict(), 200)

    @api.get("/v1/authz")
    async def authz(request: Request) -> Response:
        token = bearer(request)
        if token is None:
            return _json({"decision": "deny", "reasons": [{"code": "token", "cause": "missing"}]},
                         401, _UNAUTHORIZED)
        decision = await decide(token)
        if decision.allow:
            return Response(status_code=200, headers=identity_headers(decision))
        body = {"decision": "deny", "reasons": [r.to_dict() for r in decision.reasons]}
        if decision.verified:
            return _json(body, 403)
        if decision.reasons and decision.reasons[0].cause == "keys_unavailable":
            return _json(body, 503)
        return _json(body, 401, _INVALID)

    @api.get("/v1/health")
    async def health() -> Response:
        return _json({"status": "ok"}, 200)

    return api



