"""``skydd log verify``: check the audit log's hash chain and signed checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from audit.errors import VerificationError
from audit.log import LogReport, verify_log
from audit.signing import load_home_public_key, load_public_key
from estate.errors import InputError
from estate.settings import Settings

from ..output import err, out


def verify(
    log: Annotated[Optional[Path], typer.Option("--log", help="The log (default: $SKYDD_HOME/audit.log).")] = None,
    public_key: Annotated[Optional[Path], typer.Option("--public-key", help="PEM public key you trust (default: the $SKYDD_HOME/keys key).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="text or json")] = "text",
) -> None:
    """Check the chain and every checkpoint. Exit 0 intact, 1 broken, 2 bad input."""
    if fmt not in ("text", "json"):
        raise InputError(f"--format {fmt!r}: use text or json")
    settings = Settings.from_env()
    path = log or settings.audit_log
    key = _trusted_key(public_key, settings)
    if not path.is_file():
        raise InputError(f"--log {path}: no such file" if log else f"no audit log at {path} (nothing logged yet?)")
    try:
        with err.status("verifying the audit log…") as status:
            def progress(done: int, total: int) -> None:
                status.update(f"verifying the audit log… {done * 100 // max(total, 1)} %")
            report = verify_log(path, key, progress=progress)
    except OSError as e:
        raise InputError(f"--log {path}: {e.strerror}") from e
    if fmt == "json":
        print(json.dumps(_as_dict(report), indent=2))
    elif report.problem is None:
        _print_intact(report)
    if report.problem is not None:
        err.print(f"broken: {path}: {report.problem.message}")
        raise typer.Exit(1)


def _trusted_key(public_key: Path | None, settings: Settings):  # -> Ed25519PublicKey
    if public_key is not None:
        try:
            return load_public_key(public_key.read_bytes())
        except OSError as e:
            raise InputError(f"--public-key {public_key}: {e.strerror}") from e
        except VerificationError as e:
            raise InputError(f"--public-key {public_key}: {e}") from e
    try:
        return load_home_public_key(settings.home)
    except FileNotFoundError as e:
        raise InputError(f"no signing key in {settings.keys}; pass --public-key PEM") from e
    except (OSError, ValueError, VerificationError) as e:
        raise InputError(f"the signing key in {settings.keys} is unreadable: {e}") from e


def _print_intact(report: LogReport) -> None:
    out.print(f"intact: {report.entries} entries and {report.checkpoints} checkpoints verified; "
              f"head seq {report.head_seq} {report.head_hash}")
    if report.unsigned:
        out.print(f"{report.unsigned} entries after the last checkpoint are chained but not signed yet")
    for seq in report.recoveries:
        out.print(f"note: seq {seq} records a torn last line cut off after a crash "
                  "(the bytes are kept beside the log)")


def _as_dict(report: LogReport) -> dict[str, object]:
    p = report.problem
    return {"path": report.path, "intact": p is None, "entries": report.entries,
            "checkpoints": report.checkpoints, "head": {"seq": report.head_seq, "hash": report.head_hash},
            "last_checkpoint": report.last_checkpoint, "unsigned": report.unsigned,
            "recoveries": list(report.recoveries),
            "problem": None if p is None else {"kind": p.kind.value, "line": p.line, "seq": p.seq,
                                                "message": p.message}}


def register(app: typer.Typer) -> None:
    """Attach ``verify`` to the ``log`` group (made here when the app has none yet)."""
    group = next((g.typer_instance for g in app.registered_groups if g.name == "log"), None)
    if group is None:
        group = typer.Typer(no_args_is_help=True, help="The hash-chained audit log.")
        app.add_typer(group, name="log")
    group.command("verify")(verify)
