"""``skydd waiver request`` / ``approve`` / ``list``: waivers with four eyes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from estate.errors import InputError, SkyddError
from estate.settings import Settings

from ..output import actor, err, now, out

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    from ..officers import Officer, Roster
    from ..waivers import WaiverLedger

_EXPIRES_HELP = "Expiry in UTC, e.g. 2027-01-31T00:00:00Z; at most SKYDD_WAIVER_MAX_DAYS (365) days away."

waiver_app = typer.Typer(no_args_is_help=True, help="Waivers, with four eyes.")


def _ledger(settings: Settings, public_key: Ed25519PublicKey | None, roster: Roster | None = None) -> WaiverLedger:
    """The waivers the signed audit log holds, verified with this home's key."""
    from audit.records import read_signed_log

    from ..waivers import signed_waivers

    return signed_waivers(read_signed_log(settings.audit_log, public_key), settings.waiver_max_days, roster)


_OfficerOpt = Annotated[str | None, typer.Option(
    "--officer", help="Your id in the inventory's officer roster (needed when it has one).")]
_KeyOpt = Annotated[str | None, typer.Option(
    "--key", help="file:PATH of your Ed25519 private key (PEM); it signs the entry.")]
_InventoryOpt = Annotated[Path | None, typer.Option(
    "--inventory", help="Inventory YAML whose officer roster applies (default: with --officer, the "
    "configured one; else none, with a warning when the configured one has a roster: an audit "
    "counts a waiver only when it proves its officers to the audited inventory's roster).")]


def _warn_if_rostered(settings: Settings) -> None:
    """Never silent: an unsigned entry that the configured estate's audits will not count."""
    from estate.loader import load_inventory

    try:
        configured = settings.inventory()
        officers = load_inventory(configured, home=settings.home)[0].officers
    except (SkyddError, OSError):  # none configured, or broken: the audit of it will say so
        return
    if officers:
        err.print(f"warning: {configured} has an officer roster: an audit of it counts "
                  "this only when signed by an officer (--officer ID --key file:PATH)")


def _acting(settings: Settings, inventory: Path | None, officer_id: str | None, key_ref: str | None,
            fallback: str | None) -> tuple[Officer, Ed25519PrivateKey | None, Roster]:
    """Who acts and with which key. With a roster: ``--officer`` and ``--key`` are required and
    must match. Without one: the officer is ``--requester``/``--approver`` or $SKYDD_ACTOR."""
    from estate.loader import load_inventory

    from ..officers import Officer, Roster, key_officer, load_roster, read_private_key

    roster = Roster()
    if inventory is None and (officer_id or key_ref):
        inventory = settings.inventory()  # an officer acts for the configured estate's roster
    if inventory is not None:
        roster = load_roster(load_inventory(inventory, home=settings.home)[0], inventory)
    path = inventory or "no --inventory"
    if not roster:
        if officer_id or key_ref:
            raise InputError(f"{path} has no officer roster: --officer and --key need one")
        who = fallback or actor()
        if inventory is None:
            _warn_if_rostered(settings)
        return Officer(who, who), None, roster
    if not officer_id or not key_ref:
        raise InputError(f"{path} has an officer roster: give --officer ID and --key file:PATH "
                         "(your own key signs the entry; four eyes are checked by key)")
    if fallback:
        raise InputError("with an officer roster the officer is --officer, not a name")
    key = read_private_key(key_ref)
    return key_officer(roster, officer_id, key), key, roster


def waiver_request(
    control: Annotated[str, typer.Argument(help="Control id.")],
    reason: Annotated[str, typer.Option(help="Why the control cannot pass for now.")],
    expires: Annotated[str, typer.Option(help=_EXPIRES_HELP)],
    target: Annotated[str | None, typer.Option(help="Only this target (default: all).")] = None,
    requester: Annotated[str | None, typer.Option(
        help="Who asks, without a roster (default: $SKYDD_ACTOR/$USER).")] = None,
    officer: _OfficerOpt = None,
    key: _KeyOpt = None,
    inventory: _InventoryOpt = None,
) -> None:
    """Ask for a waiver; it applies only once another officer approves it."""
    from policies.checks import parse_time
    from policies.errors import EvidenceMissing

    from ..officers import VIA_ACTOR
    from ..waivers import request_waiver

    settings = Settings.from_env()
    try:
        expires_at = parse_time(expires)
    except EvidenceMissing as e:
        raise InputError(f"--expires {expires!r}: use RFC 3339 with a timezone, e.g. 2027-01-31T00:00:00Z") from e
    who, private_key, _ = _acting(settings, inventory, officer, key, requester)
    w = request_waiver(settings, control, target, reason, expires_at, who, now(),
                       key=private_key, via=VIA_ACTOR)
    out.print(f"requested {w.id} for {control}; it needs approval by an officer other than {who.name}")


def waiver_approve(
    waiver_id: str,
    approver: Annotated[str | None, typer.Option(
        help="Who approves, without a roster (default: $SKYDD_ACTOR/$USER).")] = None,
    officer: _OfficerOpt = None,
    key: _KeyOpt = None,
    inventory: _InventoryOpt = None,
) -> None:
    """Approve a waiver (never your own) whose request is in the signed audit log."""
    from ..officers import VIA_ACTOR
    from ..waivers import approve_waiver

    settings = Settings.from_env()
    who, private_key, roster = _acting(settings, inventory, officer, key, approver)
    w = approve_waiver(settings, waiver_id, who, now(), key=private_key, via=VIA_ACTOR, roster=roster)
    out.print(f"approved {w.id} for {w.control} until {w.expires_at:%Y-%m-%dT%H:%M:%SZ}")


def waiver_list(fmt: Annotated[str, typer.Option("--format")] = "table", inventory: _InventoryOpt = None) -> None:
    """Every signed waiver with its state: pending, active, expired or void (does not count).

    Exit 1 when the audit log does not verify (then no waiver counts)."""
    from audit.signing import load_home_public_key

    from ..waivers import WaiverStore

    settings = Settings.from_env()
    at = now()
    try:
        public_key = load_home_public_key(settings.home)
    except FileNotFoundError:
        public_key = None  # a home that never signed anything; a log without a key is a problem
    roster = None
    if inventory is not None:
        from estate.loader import load_inventory

        from ..officers import load_roster

        roster = load_roster(load_inventory(inventory, home=settings.home)[0], inventory, strict=False)
    ledger = _ledger(settings, public_key, roster)
    for t in [*ledger.log.tampering(), *ledger.tampering(WaiverStore(settings.home))]:
        err.print(f"warning: {t.line()}")
    for note in ledger.notes():
        err.print(f"warning: {note}")
    rows = []
    for wid, w in ledger.signed.items():
        if wid in ledger.void:
            state = "void"
        elif w.approver is None:
            state = "expired" if at >= w.expires_at else "pending"
        else:
            state = "active" if w.active(at) else "expired"
        rows.append({**w.to_dict(), "state": state})
    if fmt == "json":
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            out.print(f"{r['id']}  {r['state']:<8} {r['control']:<32} {r['target'] or '*':<16} "
                      f"until {r['expires_at']}  by {r['requester']} / {r['approver'] or '-'}")
        if not rows:
            out.print("no waivers")
    if ledger.log.problem is not None:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    waiver_app.command("request")(waiver_request)
    waiver_app.command("approve")(waiver_approve)
    waiver_app.command("list")(waiver_list)
    app.add_typer(waiver_app, name="waiver")
