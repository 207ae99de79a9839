"""``skydd waiver request`` / ``approve`` / ``list``: waivers with four eyes."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from estate.errors import InputError
from estate.settings import Settings
from policies import load_catalog

from ..output import actor, err, now, out

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from ..waivers import WaiverLedger

_EXPIRES_HELP = "Expiry in UTC, e.g. 2027-01-31T00:00:00Z; at most SKYDD_WAIVER_MAX_DAYS (365) days away."

waiver_app = typer.Typer(no_args_is_help=True, help="Waivers, with four eyes.")


def _ledger(settings: Settings, public_key: Ed25519PublicKey | None) -> WaiverLedger:
    """The waivers the signed audit log holds, verified with this home's key."""
    from audit.records import read_signed_log

    from ..waivers import signed_waivers

    return signed_waivers(read_signed_log(settings.audit_log, public_key), settings.waiver_max_days)


def waiver_request(
    control: Annotated[str, typer.Argument(help="Control id.")],
    reason: Annotated[str, typer.Option(help="Why the control cannot pass for now.")],
    expires: Annotated[str, typer.Option(help=_EXPIRES_HELP)],
    target: Annotated[str | None, typer.Option(help="Only this target (default: all).")] = None,
    requester: Annotated[str | None, typer.Option(help="Who asks (default: $SKYDD_ACTOR/$USER).")] = None,
) -> None:
    """Ask for a waiver; it applies only once someone else approves it."""
    from audit import log
    from audit.signing import load_signer
    from policies.checks import parse_time
    from policies.errors import EvidenceMissing

    from ..waivers import REQUEST, WaiverStore, new_request

    settings = Settings.from_env()
    if control not in load_catalog().by_id():
        raise InputError(f"{control!r}: no such control")
    try:
        expires_at = parse_time(expires)
    except EvidenceMissing as e:
        raise InputError(f"--expires {expires!r}: use RFC 3339 with a timezone, e.g. 2027-01-31T00:00:00Z") from e
    who = requester or actor()
    w = new_request(control, target, reason, who, expires_at, now(), settings.waiver_max_days)
    # The signed log first: waivers.json is only a copy, and an entry in it without a signed
    # record would be reported as tampering.
    log.append(settings.audit_log, load_signer(settings.home), REQUEST, who, w.to_dict())
    WaiverStore(settings.home).put(w)
    out.print(f"requested {w.id} for {control}; it needs approval by someone other than {who}")


def waiver_approve(
    waiver_id: str,
    approver: Annotated[str | None, typer.Option(help="Who approves (default: $SKYDD_ACTOR/$USER).")] = None,
) -> None:
    """Approve a waiver (never your own) whose request is in the signed audit log."""
    from audit import log
    from audit.errors import VerificationError
    from audit.signing import load_signer

    from ..waivers import APPROVE, WaiverStore, approval

    settings = Settings.from_env()
    who = approver or actor()
    signer = load_signer(settings.home)
    ledger = _ledger(settings, signer.public_key)
    if ledger.log.problem is not None:
        raise VerificationError(f"{ledger.log.problem}: no waiver can be approved")
    request = ledger.signed.get(waiver_id)
    if request is None:
        raise InputError(f"no waiver {waiver_id!r} is requested in the signed audit log"
                         f"{_hand_written(settings, waiver_id)}")
    if waiver_id in ledger.void:
        raise InputError(f"waiver {waiver_id} cannot be approved: {ledger.void[waiver_id]}")
    w = approval(request, who, now())
    log.append(settings.audit_log, signer, APPROVE, who, w.to_dict())
    WaiverStore(settings.home).put(w)
    out.print(f"approved {w.id} for {w.control} until {w.expires_at:%Y-%m-%dT%H:%M:%SZ}")


def _hand_written(settings: Settings, waiver_id: str) -> str:
    from ..waivers import WaiverStore

    try:
        docs = WaiverStore(settings.home).raw()
    except InputError:
        return ""
    if any(isinstance(d, dict) and d.get("id") == waiver_id for d in docs):
        return " (waivers.json names it, but nothing signed does: it was written by hand)"
    return ""


def waiver_list(fmt: Annotated[str, typer.Option("--format")] = "table") -> None:
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
    ledger = _ledger(settings, public_key)
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
