"""``skydd attest CONTROL --evidence FILE --expires DATE [--officer NAME]``: an officer's signed
attestation for a manual control (physical protection, drills)."""

from __future__ import annotations

import getpass
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from audit import log
from audit.attestations import (
    EVENT,
    AttestationError,
    AttestationStore,
    log_data,
    make_attestation,
    parse_expiry,
)
from audit.signing import load_signer
from estate.errors import InputError
from estate.settings import Settings
from policies import load_catalog


def attest(
    control: Annotated[str, typer.Argument(help="The manual control attested, e.g. c.in-building.")],
    evidence: Annotated[Path, typer.Option("--evidence", help="The evidence file (inspection record, drill minutes).")],
    expires: Annotated[str, typer.Option(
        "--expires", help="When the attestation lapses: 2027-03-01 or an RFC 3339 time.")],
    officer: Annotated[str | None, typer.Option("--officer", help="Who attests (default: the login name).")] = None,
) -> None:
    """Record a signed, expiring attestation for a manual control, and log it."""
    settings = Settings.from_env()
    at = datetime.now(UTC)
    known = load_catalog().by_id()
    if control not in known:
        raise InputError(f"{control!r}: no such control (see 'skydd catalog list')")
    if not known[control].manual:
        raise InputError(f"{control} is checked automatically; only manual controls are attested")
    name = officer or os.environ.get("SKYDD_OFFICER") or getpass.getuser()
    try:
        when = parse_expiry(expires, at)
        settings.ensure()
        signer = load_signer(settings.home)
        record = make_attestation(control, name, evidence, when, at, signer)
        path = AttestationStore(settings.home).add(record, evidence)
    except AttestationError as err:
        raise InputError(str(err)) from err
    # The record counts only once its entry is in the signed audit log: if logging fails, the
    # record goes again, so no record the log does not back is left to look like tampering.
    try:
        log.append(settings.audit_log, signer, EVENT, name, log_data(record, path))
    except BaseException:
        path.unlink(missing_ok=True)  # never leave a record the signed log does not name
        raise
    typer.echo(f"{control}: attested by {name} until {record.expires_at} ({record.evidence_digest}); "
               f"kept in {path}")


def register(app: typer.Typer) -> None:
    app.command("attest")(attest)
