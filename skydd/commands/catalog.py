"""``skydd catalog list``: the controls with their references and remediation."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from estate.errors import InputError
from policies import load_catalog

from ..output import out

catalog_app = typer.Typer(no_args_is_help=True, help="The control catalog.")


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


def register(app: typer.Typer) -> None:
    catalog_app.command("list")(catalog_list)
    app.add_typer(catalog_app, name="catalog")
