"""``skydd waiver request`` / ``approve`` / ``list``: waivers with four eyes."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from estate.errors import InputError
from estate.settings import Settings
from policies import load_catalog

from ..output import actor, now, out

waiver_app = typer.Typer(no_args_is_help=True, help="Waivers, with four eyes.")


def waiver_request(
    control: Annotated[str, typer.Argument(help="Control id.")],
    reason: Annotated[str, typer.Option(help="Why the control cannot pass for now.")],
    expires: Annotated[str, typer.Option(help="Expiry in UTC, e.g. 2027-01-31T00:00:00Z.")],
    target: Annotated[Optional[str], typer.Option(help="Only this target (default: all).")] = None,
    requester: Annotated[Optional[str], typer.Option(help="Who asks (default: $SKYDD_ACTOR/$USER).")] = None,
) -> None:
    """Ask for a waiver; it applies only once someone else approves it."""
    from audit import log
    from audit.signing import load_signer
    from policies.checks import parse_time
    from policies.errors import EvidenceMissing

    from ..waivers import WaiverStore

    settings = Settings.from_env()
    if control not in load_catalog().by_id():
        raise InputError(f"{control!r}: no such control")
    try:
        expires_at = parse_time(expires)
    except EvidenceMissing as e:
        raise InputError(f"--expires {expires!r}: use RFC 3339 with a timezone, e.g. 2027-01-31T00:00:00Z") from e
    who = requester or actor()
    w = WaiverStore(settings.home).request(control, target, reason, who, expires_at, now())
    log.append(settings.audit_log, load_signer(settings.home), "waiver.request", who, w.to_dict())
    out.print(f"requested {w.id} for {control}; it needs approval by someone other than {who}")


def waiver_approve(
    waiver_id: str,
    approver: Annotated[Optional[str], typer.Option(help="Who approves (default: $SKYDD_ACTOR/$USER).")] = None,
) -> None:
    """Approve a waiver (never your own)."""
    from audit import log
    from audit.signing import load_signer

    from ..waivers import WaiverStore

    settings = Settings.from_env()
    who = approver or actor()
    w = WaiverStore(settings.home).approve(waiver_id, who, now())
    log.append(settings.audit_log, load_signer(settings.home), "waiver.approve", who, w.to_dict())
    out.print(f"approved {w.id} for {w.control} until {w.expires_at:%Y-%m-%dT%H:%M:%SZ}")


def waiver_list(fmt: Annotated[str, typer.Option("--format")] = "table") -> None:
    """Every waiver with its state: pending, active or expired."""
    from ..waivers import WaiverStore

    at = now()
    rows = []
    for w in WaiverStore(Settings.from_env().home).all():
        state = "pending" if w.approver is None else ("active" if w.active(at) else "expired")
        if w.approver is None and at >= w.expires_at:
            state = "expired"
        rows.append({**w.to_dict(), "state": state})
    if fmt == "json":
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        out.print(f"{r['id']}  {r['state']:<8} {r['control']:<32} {r['target'] or '*':<16} "
                  f"until {r['expires_at']}  by {r['requester']} / {r['approver'] or '-'}")
    if not rows:
        out.print("no waivers")


def register(app: typer.Typer) -> None:
    waiver_app.command("request")(waiver_request)
    waiver_app.command("approve")(waiver_approve)
    waiver_app.command("list")(waiver_list)
    app.add_typer(waiver_app, name="waiver")
