"""``skydd decide --token-file F`` (the access decision as JSON; exit 0 allow, 1 deny) and
``skydd serve`` (the decision API and forward-auth on uvicorn)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from estate.errors import InputError
from estate.loader import load_inventory
from estate.settings import Settings
from identity.errors import IdentityConfigError

from ..deny_log import DenyLog
from ..output import err
from . import InventoryOpt

if TYPE_CHECKING:
    from identity.decision import AccessDecision



def _decider(inventory: Path | None, settings: Settings) -> AccessDecision:
    from identity.decision import AccessDecision

    inv, _ = load_inventory(settings.inventory(inventory), home=settings.home)
    try:
        return AccessDecision.from_inventory(inv, settings.home)
    except IdentityConfigError as e:
        raise InputError(str(e)) from e


def read_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise InputError(f"--token-file {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise InputError(f"--token-file {path}: not UTF-8 text") from e
    if not token:
        raise InputError(f"--token-file {path}: the file is empty")
    return token.removeprefix("Bearer ").strip()


def decide(
    token_file: Annotated[Path, typer.Option("--token-file", help="File holding the access token.")],
    inventory: InventoryOpt = None,
) -> None:
    """The access decision for a token, as JSON. Exit 0 allow, 1 deny, 2 bad input."""
    settings = Settings.from_env()
    token = read_token(token_file)
    decision = _decider(inventory, settings).decide(token, datetime.now(UTC))
    deny_log = DenyLog(settings.home)
    try:
        deny_log.record(decision)
    finally:
        deny_log.close()
    print(json.dumps(decision.to_dict(), indent=2, ensure_ascii=False))
    raise typer.Exit(0 if decision.allow else 1)


def default_workers() -> int:
    """One worker per core this process may run on (decisions are CPU-bound), at most 64."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(64, cores))


def serve(
    inventory: InventoryOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8600,
    workers: Annotated[int | None, typer.Option(
        help="Worker processes, each stateless (default: one per available core).", min=1, max=64)] = None,
) -> None:
    """Serve POST /v1/decision and GET /v1/authz (forward-auth) on uvicorn."""
    import uvicorn

    workers = workers or default_workers()

    settings = Settings.from_env()
    _decider(inventory, settings)  # bad input fails here, once, before any worker starts
    if inventory is not None:
        os.environ["SKYDD_INVENTORY"] = str(inventory.resolve())
    os.environ["SKYDD_HOME"] = str(settings.home)
    err.print(f"skydd: serving the access decision on http://{host}:{port} ({workers} worker(s))")
    uvicorn.run("skydd.web.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level="warning", access_log=False, server_header=False,
                proxy_headers=False)


def register(app: typer.Typer) -> None:
    app.command("decide")(decide)
    app.command("serve")(serve)
