"""``skydd training import|status``: LMS exports into the training store, and who is overdue."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from estate.errors import InputError, SkyddError
from estate.loader import load_inventory
from estate.settings import Settings
from identity.training_import import FORMATS, ImportRejected, guess_format, import_file
from identity.training_store import TrainingStore, TrainingStoreError, UserStanding, redact_url

from ..output import err, out
from . import InventoryOpt

training_app = typer.Typer(no_args_is_help=True, help="Training records that gate access (level e).")



class StoreUnavailable(SkyddError):
    """The training store could not be opened (exit 1)."""


def open_store(inventory: Path | None, settings: Settings) -> TrainingStore:
    inv, _ = load_inventory(settings.inventory(inventory), home=settings.home)
    try:
        return TrainingStore(inv.training_store.url)
    except TrainingStoreError as e:
        raise StoreUnavailable(str(e)) from e


def _now() -> datetime:
    return datetime.now(UTC)


@training_app.command("import")
def import_cmd(
    file: Annotated[Path, typer.Argument(help="An LMS export (CSV or JSON).")],
    fmt: Annotated[str | None, typer.Option("--format", help="csv or json (default: from the name).")] = None,
    inventory: InventoryOpt = None,
) -> None:
    """Load an LMS export, all or nothing. Exit 0 loaded, 1 rejected (nothing written)."""
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"--format {fmt!r}: use csv or json")
    if not file.is_file():
        raise InputError(f"{file}: no such file")
    try:
        fmt = fmt or guess_format(file)
    except ValueError as e:
        raise InputError(str(e)) from e
    settings = Settings.from_env()
    settings.ensure()
    store = open_store(inventory, settings)
    try:
        report = import_file(store, file, fmt, _now())
    except ImportRejected as e:
        for problem in e.errors:
            err.print(f"{file}: {problem}")
        err.print(f"{file}: rejected, {len(e.errors)} problem(s); nothing was written")
        raise typer.Exit(1) from e
    except TrainingStoreError as e:
        raise StoreUnavailable(str(e)) from e
    finally:
        store.close()
    _log(settings, "training.import", report.to_dict() | {"store": redact_url(store.url)})
    out.print(f"{file}: {report.rows} completion(s): {report.inserted} new, {report.unchanged} "
              f"already recorded; {report.courses_changed} course(s) changed, "
              f"{report.requirements_added} requirement(s) added")


@training_app.command("status")
def status_cmd(
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    show_all: Annotated[bool, typer.Option("--all", help="List users whose training is current too.")] = False,
    inventory: InventoryOpt = None,
) -> None:
    """Who is overdue (expired or never done a required course) and since when."""
    if fmt not in ("table", "json"):
        raise InputError(f"--format {fmt!r}: use table or json")
    settings = Settings.from_env()
    store = open_store(inventory, settings)
    at = _now()
    try:
        standings = store.standings(at)
    finally:
        store.close()
    if fmt == "json":
        print(json.dumps(status_json(standings, at), indent=2))
        return
    overdue = [s for s in standings if not s.current]
    for st in standings if show_all else overdue:
        if st.current:
            out.print(f"{st.username:<24} current")
        for c in st.overdue:
            since = c.overdue_since.strftime("%Y-%m-%d") if c.overdue_since else "?"
            what = "never completed" if c.state == "missing" else f"expired (last {c.completed_at:%Y-%m-%d})"
            out.print(f"{st.username:<24} {c.course:<20} {what:<32} overdue since {since}")
    out.print(f"{len(overdue)} of {len(standings)} user(s) overdue at {at:%Y-%m-%d %H:%M}Z")


def status_json(standings: list[UserStanding], at: datetime) -> dict[str, Any]:
    def iso(t: datetime | None) -> str | None:
        return t.strftime("%Y-%m-%dT%H:%M:%SZ") if t else None

    return {"at": iso(at), "users": [
        {"username": s.username, "hsa_id": s.hsa_id, "municipality": s.municipality,
         "roles": list(s.roles), "current": s.current,
         "courses": [{"course": c.course, "state": c.state, "completed_at": iso(c.completed_at),
                      "valid_until": iso(c.valid_until), "overdue_since": iso(c.overdue_since)}
                     for c in s.courses]}
        for s in standings],
        "overdue": sum(1 for s in standings if not s.current)}


def _log(settings: Settings, event: str, data: dict[str, Any]) -> None:
    from audit import log
    from audit.signing import load_signer

    from ..output import actor

    log.append(settings.audit_log, load_signer(settings.home), event, actor(), data)


def register(app: typer.Typer) -> None:
    app.add_typer(training_app, name="training")
