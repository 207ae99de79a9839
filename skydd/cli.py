"""The ``skydd`` command line. Every command accepts ``--inventory``; without it the lab
inventory is used. Bad input is one line on stderr and exit 2."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from audit.errors import AuditError, VerificationError
from estate.errors import InputError, SkyddError
from estate.settings import Settings
from policies import PolicyError, load_catalog

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Skydd: five security levels as controls, applied with Ansible, "
                       "proven with signed compliance reports.")
catalog_app = typer.Typer(no_args_is_help=True, help="The control catalog.")
report_app = typer.Typer(no_args_is_help=True, help="Signed compliance reports.")
log_app = typer.Typer(no_args_is_help=True, help="The hash-chained audit log.")
waiver_app = typer.Typer(no_args_is_help=True, help="Waivers, with four eyes.")
app.add_typer(catalog_app, name="catalog")
app.add_typer(report_app, name="report")
app.add_typer(log_app, name="log")
app.add_typer(waiver_app, name="waiver")

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

InventoryOpt = Annotated[Optional[Path], typer.Option("--inventory", help="Inventory YAML (default: the lab's).")]


def actor() -> str:
    return os.environ.get("SKYDD_ACTOR") or os.environ.get("SUDO_USER") or os.environ.get("USER") or "unknown"


def now() -> datetime:
    return datetime.now(UTC)


@app.command()
def audit(
    inventory: InventoryOpt = None,
    level: Annotated[Optional[str], typer.Option(help="Levels, e.g. a,b.")] = None,
    control: Annotated[Optional[str], typer.Option(help="Control ids, comma separated.")] = None,
    profile: Annotated[Optional[str], typer.Option(help="A tailoring in policies/profiles/ (e.g. lab).")] = None,
    site: Annotated[Optional[str], typer.Option(help="Only this site.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Report folder.")] = None,
    evidence: Annotated[Optional[Path], typer.Option(help="Audit offline from an evidence bundle.")] = None,
    capture: Annotated[Optional[Path], typer.Option(help="Also save the collected evidence as a bundle.")] = None,
) -> None:
    """Collect evidence, evaluate, write signed reports. Exit 0 compliant, 1 fail, 3 incomplete."""
    from .auditing import Selection, run_audit

    selection = Selection.parse(level, control, site, profile)
    with err.status("collecting evidence…") as status:
        def progress(source: str, state: str) -> None:
            status.update(f"collected {source}: {state}")
            err.print(f"  {'✓' if state == 'ok' else '✗'} {source}: {state}")
        result = run_audit(Settings.from_env(), inventory, selection, out_dir=out_dir,
                           bundle=evidence, capture=capture, progress=progress, actor=actor())
    summary = result.report["summary"]
    drift = result.report["drift"]
    for warning in result.warnings:
        err.print(f"warning: {warning}")
    for lv, counts in summary["levels"].items():
        shown = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        if shown:
            out.print(f"level {lv}: {shown}")
    if drift.get("previous"):
        out.print(f"since {drift['previous']['generated_at']}: {len(drift['newly_failing'])} newly "
                  f"failing, {len(drift['newly_fixed'])} newly fixed")
    out.print(f"{summary['status']}: report in {result.out_dir}")
    raise typer.Exit(result.exit_code)


@catalog_app.command("list")
def catalog_list(fmt: Annotated[str, typer.Option("--format", help="json or table")] = "table") -> None:
    """The controls: id, level, title, severity, references, remediation."""
    if fmt not in ("json", "table"):
        raise InputError(f"--format {fmt!r}: use json or table")
    cat = load_catalog()
    rows = [{"id": c.id, "level": c.level.value, "title": c.title, "severity": c.severity.value,
             "references": {k: list(v) for k, v in c.references.items()},
             "remediation": ({"playbook": c.remediation.playbook, "tags": list(c.remediation.tags),
                              "disruptive": c.remediation.disruptive} if c.remediation else None)}
            for c in cat.controls]
    if fmt == "json":
        print(json.dumps({"catalog": {"version": cat.version, "digest": cat.digest},
                          "controls": rows}, indent=2, ensure_ascii=False))
        return
    for r in rows:
        out.print(f"{r['id']:<40} {r['severity']:<9} {r['title']}")
    out.print(f"{len(rows)} controls")


@report_app.command("verify")
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


@waiver_app.command("request")
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

    from .waivers import WaiverStore

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


@waiver_app.command("approve")
def waiver_approve(
    waiver_id: str,
    approver: Annotated[Optional[str], typer.Option(help="Who approves (default: $SKYDD_ACTOR/$USER).")] = None,
) -> None:
    """Approve a waiver (never your own)."""
    from audit import log
    from audit.signing import load_signer

    from .waivers import WaiverStore

    settings = Settings.from_env()
    who = approver or actor()
    w = WaiverStore(settings.home).approve(waiver_id, who, now())
    log.append(settings.audit_log, load_signer(settings.home), "waiver.approve", who, w.to_dict())
    out.print(f"approved {w.id} for {w.control} until {w.expires_at:%Y-%m-%dT%H:%M:%SZ}")


@waiver_app.command("list")
def waiver_list(fmt: Annotated[str, typer.Option("--format")] = "table") -> None:
    """Every waiver with its state: pending, active or expired."""
    from .waivers import WaiverStore

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


def _register_commands() -> None:
    from importlib import import_module

    from .commands import MODULES

    for name in MODULES:
        import_module(f"skydd.commands.{name}").register(app)


_register_commands()


def main() -> None:
    """Entry point: one clear line for every known error, never a traceback."""
    try:
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (InputError, PolicyError) as e:
        err.print(f"skydd: {e}")
        sys.exit(2)
    except (SkyddError, AuditError) as e:
        err.print(f"skydd: {e}")
        sys.exit(getattr(e, "exit_code", 1))
    except KeyboardInterrupt:
        err.print("skydd: interrupted")
        sys.exit(130)
    except Exception as e:  # click usage errors and the unexpected
        import click
        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(2)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(130)
        if os.environ.get("SKYDD_DEBUG"):
            raise
        err.print(f"skydd: internal error: {type(e).__name__}: {e} (set SKYDD_DEBUG=1 for details)")
        sys.exit(1)


