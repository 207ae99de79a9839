"""``skydd report verify``: check a signed compliance report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from audit.errors import VerificationError
from estate.errors import InputError

from ..output import err, out

report_app = typer.Typer(no_args_is_help=True, help="Signed compliance reports.")


def report_verify(
    file: Path,
    public_key: Annotated[Optional[Path], typer.Option("--public-key", help="The key you trust (default: the one beside the report).")] = None,
) -> None:
    """Check a report's signature. Exit 0 valid, 1 invalid."""
    from audit.reports.json_report import verify_report

    pem = None
    if public_key is not None:
        try:
            pem = public_key.read_bytes()
        except OSError as e:
            raise InputError(f"--public-key {public_key}: {e.strerror}") from e
    try:
        report = verify_report(file, pem)
    except VerificationError as e:
        err.print(f"invalid: {e}")
        raise typer.Exit(1) from e
    out.print(f"valid: report {report['id']} signed by {report['signature']['key_id']}")


def register(app: typer.Typer) -> None:
    report_app.command("verify")(report_verify)
    app.add_typer(report_app, name="report")
