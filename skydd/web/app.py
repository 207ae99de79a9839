"""The application: ``create_app(decider, deny_log)``; ``app_from_env()`` for uvicorn workers.

``GET /v1/authz`` (forward-auth, the hot path) goes straight to a plain ASGI handler; everything
else (``POST /v1/decision``, ``GET /v1/health``, the lifespan) to FastAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI

from identity.decision import AccessDecision

from ..deny_log import DenyLog
from .decision_api import Clock, ForwardAuth, router
from .headers import SecurityHeaders


def utc_now() -> datetime:
    return datetime.now(UTC)


class SkyddApp:
    """Dispatch by path: ``/v1/authz`` to the forward-auth handler, the rest to FastAPI."""

    AUTHZ = "/v1/authz"

    def __init__(self, api: FastAPI, authz: ForwardAuth) -> None:
        self.api, self.authz = api, authz

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == self.AUTHZ:
            await self.authz(scope, receive, send)
        else:
            await self.api(scope, receive, send)


def create_app(decider: AccessDecision, deny_log: DenyLog, *, clock: Clock = utc_now) -> SkyddApp:
    """The app around one decision service and its deny log. No docs, no OpenAPI: nothing but
    the API."""
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        deny_log.close()  # seal the deny log with a signed checkpoint

    app = FastAPI(title="Skydd", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.include_router(router(decider, deny_log, clock))
    app.add_middleware(SecurityHeaders)
    return SkyddApp(app, ForwardAuth(decider, deny_log, clock))


def app_from_env() -> SkyddApp:
    """For ``uvicorn --factory``: the inventory from ``$SKYDD_INVENTORY`` (default: the home's,
    ``Settings.inventory``) and the home from ``$SKYDD_HOME``."""
    from estate.loader import load_inventory
    from estate.settings import Settings

    settings = Settings.from_env()
    inventory, _ = load_inventory(settings.inventory(), home=settings.home)
    return create_app(AccessDecision.from_inventory(inventory, settings.home),
                      DenyLog(settings.home))
