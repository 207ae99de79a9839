"""``skydd lab up|down|status|demo|otp|card``: the local lab of real services."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from estate.errors import InputError
from estate.settings import Settings
from skydd.lab.errors import LabError

from ..lab import link_inventory, services, unlink_inventory
from ..lab.service import Progress

lab_app = typer.Typer(no_args_is_help=True, help="The local lab of real services (root).")
# Markup for styling our own words only: service names, messages and errors are escaped.
err = Console(stderr=True, highlight=False, soft_wrap=True)

OnlyOpt = Annotated[str | None, typer.Option("--only", help="Only these services, comma separated.")]


def _progress(name: str) -> Progress:
    """A service's progress lines, indented under its name."""
    return lambda msg: err.print(f"  {escape(name)}: {escape(str(msg))}")


def _only(only: str | None) -> list[str] | None:
    return [s.strip() for s in only.split(",") if s.strip()] if only else None


@lab_app.command("up")
def up(only: OnlyOpt = None) -> None:
    """Start the lab, unhardened, and wait until every service is ready."""
    settings = Settings.from_env()
    settings.ensure()
    selected = services(settings.home, _only(only))
    err.print(f"inventory: {escape(link_inventory(settings.home))}")
    for svc in selected:
        err.print(f"[bold]{escape(svc.name)}[/]: starting")
        try:
            svc.up(_progress(svc.name))
        except LabError as e:
            err.print(f"{escape(svc.name)}: failed: {escape(str(e))}")
            raise typer.Exit(1) from e
        err.print(f"{escape(svc.name)}: up")


@lab_app.command("down")
def down(only: OnlyOpt = None) -> None:
    """Stop every lab service and remove what the lab made."""
    failed = False
    home = Settings.from_env().home
    for svc in reversed(services(home, _only(only))):
        try:
            svc.down(_progress(svc.name))
            err.print(f"{escape(svc.name)}: down")
        except LabError as e:
            err.print(f"{escape(svc.name)}: failed to stop: {escape(str(e))}")
            failed = True
    if only is None and not failed:
        unlink_inventory(home)
    raise typer.Exit(1 if failed else 0)


@lab_app.command("status")
def status(fmt: Annotated[str, typer.Option("--format", help="json or table")] = "table") -> None:
    """Each lab service's state and endpoint."""
    report = {"services": {s.name: s.status() for s in services(Settings.from_env().home)}}
    if fmt == "json":
        print(json.dumps(report, indent=2, default=str))
        return
    for name, st in report["services"].items():
        print(f"{name:<10} {st.get('state', '?'):<5} {st.get('endpoint', '')}")


def _keycloak() -> Any:
    from ..lab.keycloak import Service

    return Service(Settings.from_env().home)


@lab_app.command("otp")
def otp(user: Annotated[str, typer.Argument(help="A lab console user, e.g. greta.officer.")]) -> None:
    """The next one-time code of a lab console user (each code is given once)."""
    import time

    try:
        code, wait = _keycloak().console_otp(user, time.time())
    except LabError as e:
        err.print(escape(str(e)))
        raise typer.Exit(1) from e
    print(code)
    if wait > 0:
        err.print(f"valid in {wait:.0f} s")


@lab_app.command("card")
def card(user: Annotated[str, typer.Argument(help="A lab console user, e.g. greta.officer.")],
         out: Annotated[Path, typer.Option("--out", help="Where to write the PKCS#12 file (no password).")]) -> None:
    """Write a lab user's e-ID card as PKCS#12 for importing into a browser."""
    try:
        _keycloak().console_card(user, out)
    except LabError as e:
        err.print(escape(str(e)))
        raise typer.Exit(1) from e
    except OSError as e:
        raise InputError(f"--out {out}: {e.strerror}") from e
    err.print(f"wrote {escape(str(out))} (0600, no password): import it into the browser's certificates")


@lab_app.command("demo")
def demo(keep: Annotated[bool, typer.Option("--keep", help="Leave the lab running afterwards.")] = False) -> None:
    """The whole cycle: lab up, audit (fails), apply, attest, audit (passes), lab down."""
    from ..lab.demo import run_demo

    settings = Settings.from_env()
    settings.ensure()
    try:
        report = run_demo(settings, lambda msg: err.print(f"[bold]== {escape(str(msg))}[/]"), keep=keep)
    except LabError as e:
        err.print(f"demo: {escape(str(e))}")
        raise typer.Exit(1) from e
    print(f"signed report: {report / 'report.json'}")
    print(f"readable report: {report / 'report.html'}")
    print(f"verify it: skydd report verify {report / 'report.json'}")
    if keep:
        print(_keycloak().console_hint())
    else:
        print("officers' console: run 'skydd lab demo --keep' to leave the lab running, then follow "
              "what it prints to sign in as the lab officer greta.officer (card + OTP)")


def register(app: typer.Typer) -> None:
    app.add_typer(lab_app, name="lab")
