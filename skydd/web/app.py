"""The FastAPI application: ``create_app(decider)``; ``app_from_env()`` for uvicorn workers."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI

from identity.decision import AccessDecision

from ..deny_log import DenyLog
from .decision_api import Clock, router
from .headers import SecurityHeaders


def utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(decider: AccessDecision, deny_log: DenyLog, *, clock: Clock = utc_now) -> FastAPI:
    """The app around one decision service and its deny log. No docs, no OpenAPI: nothing but
    the API."""
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        deny_log.close()  # seal the deny log with a signed checkpoint

    app = FastAPI(title="Skydd", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.include_router(router(decider, deny_log, clock))
    app.add_middleware(SecurityHeaders)
    return app


def app_from_env() -> FastAPI:
    """For ``uvicorn --factory``: the inventory from ``$SKYDD_INVENTORY`` (default: the lab's)
    and the home from ``$SKYDD_HOME``."""
    from estate.loader import load_inventory
    from estate.settings import Settings
    from skydd.lab import LAB_INVENTORY

    settings = Settings.from_env()
    inventory_path = os.environ.get("SKYDD_INVENTORY")
    inventory, _ = load_inventory(Path(inventory_path) if inventory_path else LAB_INVENTORY,
                                  home=settings.home)
    return create_app(AccessDecision.from_inventory(inventory, settings.home),
                      DenyLog(settings.home))
