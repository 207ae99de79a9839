"""``skydd report verify``: check a signed compliance report against a key you trust."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from audit.errors import VerificationError
from estate.errors import InputError
from estate.settings import Settings

from ..output import err, out

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

report_app = typer.Typer(no_args_is_help=True, help="Signed compliance reports.")

_KEY_HELP = "The Ed25519 public key (PEM) you trust (default: this Skydd home's own key)."
_TRUST_HELP = "A file of pinned PEM public keys; the report must be signed by one of them."


def report_verify(
    file: Path,
    public_key: Annotated[Path | None, typer.Option("--public-key", help=_KEY_HELP)] = None,
    trust: Annotated[Path | None, typer.Option("--trust", help=_TRUST_HELP)] = None,
) -> None:
    """Check a report's signature with a pinned key. Exit 0 valid, 1 invalid, 2 unreadable file or
    bad option. The report.pub.pem beside a report is never trusted."""
    from audit.reports.json_report import read_report_file, verify_report_bytes

    if public_key is not None and trust is not None:
        raise InputError("give --public-key or --trust, not both")
    data = read_report_file(file)
    keys, via = _trusted(public_key, trust)
    try:
        verified = verify_report_bytes(data, keys)
    except VerificationError as e:
        err.print(f"invalid: {file}: {e}")
        raise typer.Exit(1) from e
    out.print(f"valid: report {verified.report['id']} signed by {verified.key_id} "
              f"(trusted via {via})")


def _trusted(public_key: Path | None, trust: Path | None) -> tuple[list[Ed25519PublicKey], str]:
    """The keys to verify with and how they came to be trusted; ``InputError`` (exit 2) else."""
    from audit.signing import home_key_path, load_home_public_key, load_public_key, load_trusted_keys

    if public_key is not None:
        try:
            return [load_public_key(_read(public_key, "--public-key"))], f"--public-key {public_key}"
        except VerificationError as e:
            raise InputError(f"--public-key {public_key}: {e}") from e
    if trust is not None:
        try:
            return load_trusted_keys(_read(trust, "--trust")), f"--trust {trust}"
        except VerificationError as e:
            raise InputError(f"--trust {trust}: {e}") from e
    home = Settings.from_env().home
    path = home_key_path(home)
    try:
        return [load_home_public_key(home)], f"the home key {path}"
    except FileNotFoundError as e:
        raise InputError(f"no key to trust: {path} does not exist (SKYDD_HOME={home}); pass "
                         "--public-key KEY or --trust FILE (the report.pub.pem beside a report is "
                         "not trusted)") from e
    except (OSError, ValueError, VerificationError) as e:
        raise InputError(f"cannot read the home key {path}: {getattr(e, 'strerror', None) or e}") from e


def _read(path: Path, option: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise InputError(f"{option} {path}: {e.strerror}") from e


def register(app: typer.Typer) -> None:
    from .signoff import report_sign_off, report_signoffs

    report_app.command("verify")(report_verify)
    report_app.command("sign-off")(report_sign_off)
    report_app.command("signoffs")(report_signoffs)
    app.add_typer(report_app, name="report")
