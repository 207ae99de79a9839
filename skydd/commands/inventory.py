"""``skydd inventory export --format ansible``: the inventory for AWX / Automation Controller and
ansible-navigator (docs/scale.md).

The export is the inventory ``skydd apply`` generates for each run, made to stand on its own
where Skydd does not drive the run: the controller and the hosts without a connection run with
the Python that runs the playbook (``{{ ansible_playbook_python }}``, the execution
environment's), ``file:`` keys are referenced where they lie, ``skydd_inventory_file`` names the
Skydd inventory as the execution environment sees it (level b reads each firewall's plan from
it), and host keys stay pinned: strict checking against one known_hosts file. A key held in an
environment variable (``env:``) is left out, with a warning: give AWX a Machine credential.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from estate.errors import InputError
from estate.inventory import Inventory
from estate.loader import load_inventory
from estate.settings import Settings

from .. import ansible_inventory
from ..output import err
from . import InventoryOpt

inventory_app = typer.Typer(no_args_is_help=True, help="The inventory in other tools' formats.")

PLAYBOOK_PYTHON = "{{ ansible_playbook_python }}"
_NO_RUN_DIR = Path("/nonexistent/skydd-export")  # env: key files would go here; they are dropped


def export_ansible(inventory: Inventory, *, inventory_file: str, known_hosts: str | None = None,
                   ) -> tuple[dict[str, Any], list[str]]:
    """The Ansible inventory of ``inventory`` for a run Skydd does not drive, and warnings (pure)."""
    if known_hosts is not None and not known_hosts.strip():
        raise InputError("--known-hosts: give the path of the pinned known_hosts file")
    built = ansible_inventory.build(inventory, run_dir=_NO_RUN_DIR, python=PLAYBOOK_PYTHON)
    warnings: list[str] = []
    dropped = {Path(k).stem: ref for k, ref in built.key_files.items()}
    for group in built.data["all"]["children"].values():
        for name, hv in (group.get("hosts") or {}).items():
            if not hv or hv.get("ansible_connection") != "ssh":
                continue
            if name in dropped:
                del hv["ansible_ssh_private_key_file"]
                warnings.append(f"{name}: its key is {dropped[name].partition(':')[0]}:… (not a "
                                "file); give the run a Machine credential with that key")
            if known_hosts is not None:
                hv["ansible_ssh_common_args"] = ansible_inventory.ssh_args(known_hosts)
    built.data["all"]["vars"]["skydd_inventory_file"] = inventory_file
    return built.data, warnings


def render(data: dict[str, Any], source: str) -> str:
    head = (f"# Ansible inventory exported by 'skydd inventory export --format ansible' from {source}.\n"
            "# Hosts with ansible_connection ssh trust only the known_hosts file in their\n"
            "# ansible_ssh_common_args (StrictHostKeyChecking=yes): ship that file with the run.\n")
    body: str = yaml.safe_dump(data, sort_keys=True, default_flow_style=False, allow_unicode=True)
    return head + body


def export(
    fmt: Annotated[str, typer.Option("--format", help="ansible (YAML inventory).")] = "ansible",
    inventory: InventoryOpt = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="Write here (default: stdout).")] = None,
    inventory_file: Annotated[str | None, typer.Option(
        "--inventory-file", help="Path of the Skydd inventory where the playbooks run "
                                 "(skydd_inventory_file; default: --inventory, absolute).")] = None,
    known_hosts: Annotated[str | None, typer.Option(
        "--known-hosts", help="Path of the pinned known_hosts file where the playbooks run "
                              "(default: each connection's own).")] = None,
) -> None:
    """Write the inventory for AWX / Automation Controller or ansible-navigator. Exit 0, 2 bad input."""
    if fmt != "ansible":
        raise InputError(f"--format {fmt!r}: use ansible")
    settings = Settings.from_env()
    path = settings.inventory(inventory)
    inv, _ = load_inventory(path, home=settings.home)
    data, warnings = export_ansible(inv, inventory_file=inventory_file or str(path.resolve()),
                                    known_hosts=known_hosts)
    text = render(data, path.name)
    for w in warnings:
        err.print(f"warning: {w}")
    if out_file is None:
        sys.stdout.write(text)
        return
    try:
        fd = os.open(out_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as e:
        raise InputError(f"--out {out_file}: {e.strerror}") from e
    err.print(f"wrote {out_file}")


def register(app: typer.Typer) -> None:
    inventory_app.command("export")(export)
    app.add_typer(inventory_app, name="inventory")
