"""``skydd apply``: run the playbooks of the selected controls, then audit what was touched."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from estate.settings import Settings

from . import InventoryOpt

# Consoles with markup for styling: every piece of text that is not our own literal (control ids,
# hosts, paths, messages) goes through ``escape`` or ``Text``, never straight into markup.
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

_STYLE = {"ok": "green", "changed": "yellow", "failed": "bold red", "unreachable": "bold red",
          "skipped": "dim"}


def diff_lines(diff: Mapping[str, Any]) -> list[str]:
    """A compact text form of one Ansible diff: ``key: before -> after`` or a unified diff."""
    before, after = diff.get("before"), diff.get("after")
    if isinstance(before, Mapping) or isinstance(after, Mapping):
        b, a = dict(before or {}), dict(after or {})
        where = a.get("path") or b.get("path") or diff.get("after_header") or ""
        keys = [k for k in sorted(set(b) | set(a)) if k != "path" and b.get(k) != a.get(k)]
        return [f"{where}: {k} {b.get(k, '-')} -> {a.get(k, '-')}" for k in keys]
    text = difflib.unified_diff(str(before or "").splitlines(), str(after or "").splitlines(),
                                str(diff.get("before_header", "before")),
                                str(diff.get("after_header", "after")), lineterm="")
    return list(text)


def apply(
    inventory: InventoryOpt = None,
    level: Annotated[str | None, typer.Option(help="Levels, e.g. a,b.")] = None,
    control: Annotated[str | None, typer.Option(help="Control ids, comma separated.")] = None,
    profile: Annotated[str | None, typer.Option(help="A tailoring in policies/profiles/ (e.g. lab).")] = None,
    site: Annotated[str | None, typer.Option(help="Only the hosts of this site.")] = None,
    check: Annotated[bool, typer.Option("--check", help="Show what would change; change nothing.")] = False,
    diff: Annotated[bool, typer.Option("--diff", help="Show the changes in detail.")] = False,
    allow_disruptive: Annotated[bool, typer.Option("--allow-disruptive",
                                                   help="Also apply controls marked disruptive.")] = False,
) -> None:
    """Apply the selected controls with Ansible, then audit them. Exit 0 ok, 1 a task failed or
    a host was unreachable, 2 bad input."""
    from ..applying import ApplyEvent, ApplyOptions, run_apply
    from ..auditing import Selection
    from ..output import actor

    selection = Selection.parse(level, control, site, profile)
    status = err.status(Text("preparing…"))

    def on_event(e: ApplyEvent) -> None:
        if e.kind == "playbook":
            err.print(f"[bold]{escape(e.playbook)}[/] tags {escape(e.message)}"
                      + ("  [dim](check mode: nothing is changed)[/]" if check else ""))
        elif e.kind == "play":
            err.print(f"[bold]play[/] {escape(e.message)}")
        elif e.kind == "task":
            status.update(Text(f"running {e.task}"))  # a spinner reads a str as markup
            err.print(f"  [cyan]task[/] {escape(e.task)}")
        else:
            line = f"    [{_STYLE.get(e.kind, 'white')}]{e.kind:<11}[/] {escape(e.host)}"
            if e.message:
                line += f": {escape(e.message)}"
            err.print(line)
            for d in e.diffs if diff else ():
                for text in diff_lines(d):
                    err.print(f"      {escape(text)}", style="yellow")

    def on_audit(source: str, state: str) -> None:
        err.print(f"  {'✓' if state == 'ok' else '✗'} {escape(source)}: {escape(state)}")

    with status:
        result = run_apply(Settings.from_env(), inventory, selection,
                           ApplyOptions(check=check, diff=diff, allow_disruptive=allow_disruptive),
                           on_event=on_event, audit_progress=on_audit, actor=actor())
    p = result.plan
    for c in p.manual:
        out.print(f"manual (no playbook, skipped): {escape(c.id)}")
    for c in p.disruptive:
        out.print(f"disruptive (skipped, needs --allow-disruptive): {escape(c.id)}")
    for host, s in sorted(result.hosts.items()):
        out.print(f"{escape(host)}: ok={s.ok} changed={s.changed} failed={s.failed} "
                  f"unreachable={s.unreachable} skipped={s.skipped}")
    t = result.totals()
    verb = "would change" if check else "changed"
    out.print(f"{'check' if check else 'apply'}: {len(p.controls)} control(s), {len(result.hosts)} "
              f"host(s), {verb} {t.changed} task(s); run folder {escape(str(result.run_dir))}")
    for cid in result.untouched:
        out.print(f"[yellow]nothing ran for {escape(cid)}[/]: no host matched, or its playbook has no "
                  "task tagged with it")
    for problem in result.problems:
        out.print(f"[bold red]failed[/]: {escape(problem)}")
    for book in result.not_run:
        out.print(f"not run after the failure: {escape(str(book))}")
    if result.audit is not None:
        summary = result.audit.report["summary"]
        counts: dict[str, int] = {}
        for lv in summary["levels"].values():
            for k, n in lv.items():
                counts[k] = counts.get(k, 0) + n
        shown = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        out.print(f"re-audit: {summary['status']} ({shown}); report in {escape(str(result.audit.out_dir))}")
    elif result.audit_error:
        out.print(f"re-audit failed: {escape(result.audit_error)}")
    raise typer.Exit(result.exit_code)


def register(app: typer.Typer) -> None:
    app.command("apply")(apply)
