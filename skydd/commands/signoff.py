"""``skydd report sign-off`` / ``signoffs``: an officer vouches for a report, by digest, in the
signed audit log (``skydd.signoff``; the console does the same for a signed-in officer)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from estate.errors import InputError
from estate.settings import Settings

from ..output import now, out
from .waiver import _acting, _InventoryOpt, _KeyOpt, _OfficerOpt


def _report_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: {e.strerror}") from e
    if not data:
        raise InputError(f"{path} is empty")
    return data


def report_sign_off(
    file: Annotated[Path, typer.Argument(help="The report (its exact bytes are signed off).")],
    comment: Annotated[str, typer.Option(help="What you checked, or why you accept it.")] = "",
    signer: Annotated[str | None, typer.Option(
        "--as", help="Who signs off, without a roster (default: $SKYDD_ACTOR/$USER).")] = None,
    officer: _OfficerOpt = None,
    key: _KeyOpt = None,
    inventory: _InventoryOpt = None,
) -> None:
    """Sign off a report: its SHA-256, you, the time and your comment go into the signed audit log."""
    from ..officers import VIA_ACTOR
    from ..signoff import sign_off

    settings = Settings.from_env()
    data = _report_bytes(file)
    who, private_key, _ = _acting(settings, inventory, officer, key, signer)
    s = sign_off(settings, data, who, comment, now(), key=private_key, via=VIA_ACTOR)
    out.print(f"signed off {file.name} ({s.digest}) as {who.name}")


def report_signoffs(
    file: Annotated[Path, typer.Argument(help="The report whose sign-offs to show.")],
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    inventory: _InventoryOpt = None,
) -> None:
    """The sign-offs of exactly this report in the verified audit log. Exit 1 when it has none
    (never signed off, or changed since)."""
    from estate.loader import load_inventory

    from ..officers import Roster, load_roster
    from ..signoff import report_digest, sign_offs

    settings = Settings.from_env()
    data = _report_bytes(file)
    roster = Roster()
    if inventory is not None:
        roster = load_roster(load_inventory(inventory, home=settings.home)[0], inventory)
    found = sign_offs(settings, data, roster)
    if fmt == "json":
        print(json.dumps([s.to_dict() for s in found], indent=2))
    else:
        for s in found:
            out.print(f"{s.at:%Y-%m-%dT%H:%M:%SZ}  {s.name} ({s.subject}) via {s.via}: {s.comment}")
        if not found:
            out.print(f"not signed off: no sign-off in the verified audit log is for {report_digest(data)}")
    if not found:
        raise typer.Exit(1)
