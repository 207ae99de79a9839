"""The ``skydd`` command line. Every command accepts ``--inventory``; without it the lab
inventory is used. Bad input is one line on stderr and exit 2."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from estate.errors import SkyddError
from estate.settings import Settings

from .commands import InventoryOpt
from .output import actor, err, out

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Skydd: five security levels as controls, applied with Ansible, "
                       "proven with signed compliance reports.")



@app.command()
def audit(
    inventory: InventoryOpt = None,
    level: Annotated[str | None, typer.Option(help="Levels, e.g. a,b.")] = None,
    control: Annotated[str | None, typer.Option(help="Control ids, comma separated.")] = None,
    profile: Annotated[str | None, typer.Option(help="A tailoring in policies/profiles/ (e.g. lab).")] = None,
    site: Annotated[str | None, typer.Option(help="Only this site.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Report folder.")] = None,
    evidence: Annotated[Path | None, typer.Option(help="Audit offline from an evidence bundle.")] = None,
    capture: Annotated[Path | None, typer.Option(help="Also save the collected evidence as a bundle.")] = None,
) -> None:
    """Collect evidence, evaluate, write signed reports. Exit 0 compliant, 1 fail, 3 incomplete."""
    from .auditing import Selection, run_audit

    selection = Selection.parse(level, control, site, profile)
    with err.status(Text("collecting evidence…")) as status:
        def progress(source: str, state: str) -> None:
            status.update(Text(f"collected {source}: {state}"))  # a spinner reads a str as markup
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


def _register_commands() -> None:
    from importlib import import_module

    from .commands import MODULES

    for name in MODULES:
        import_module(f"skydd.commands.{name}").register(app)


_register_commands()


def main() -> None:
    """Entry point: one clear line for every known error, never a traceback.

    Bad input ends with exit 2: a ``SkyddError`` with that code, a usage error, or input so large
    or deeply nested that Python ran out of stack or memory while reading it.
    """
    try:
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except SkyddError as e:
        err.print(f"skydd: {e}")
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        err.print("skydd: interrupted")
        sys.exit(130)
    except (RecursionError, MemoryError) as e:
        err.print(f"skydd: input too large or too deeply nested to read ({type(e).__name__})")
        sys.exit(2)
    except Exception as e:  # usage errors and the unexpected
        if _usage_error(e):
            ctx = getattr(e, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            err.print(f"skydd: {e.format_message()}{hint}")  # type: ignore[attr-defined]
            sys.exit(2)
        if os.environ.get("SKYDD_DEBUG"):
            raise
        err.print(f"skydd: internal error: {type(e).__name__}: {e} (set SKYDD_DEBUG=1 for details)")
        sys.exit(1)


def _usage_error(e: Exception) -> bool:
    """A bad command line: typer's own click (``typer.TyperException``), or click's."""
    import click

    return isinstance(e, (click.ClickException, typer.TyperException)) and hasattr(e, "format_message")
