"""The local lab of real services. ``SERVICES`` lists their modules in start order; each module
defines ``Service``, a ``skydd.lab.service.LabService``."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

from .service import LabService

LAB_INVENTORY = Path(__file__).parent / "inventory.yaml"  # also the example inventory

# Start order: the network first (others live in its namespaces), vcsim last; the officers' keys
# (files only) after them.
SERVICES: tuple[str, ...] = ("network", "postgres", "keycloak", "training", "vcsim", "officers")


def link_inventory(home: Path) -> str:
    """Make the lab's inventory the home's default (``$SKYDD_HOME/inventory.yaml``, a link), so
    that commands without ``--inventory`` work on the lab; an inventory of the user's own there is
    kept. Returns what was done, for progress."""
    link = home / "inventory.yaml"
    if link.is_symlink() and link.resolve() == LAB_INVENTORY.resolve():
        return f"{link} is the lab's inventory"
    if link.exists() or link.is_symlink():
        return f"{link} is not the lab's inventory and is kept: give --inventory {LAB_INVENTORY} for the lab"
    link.symlink_to(LAB_INVENTORY.resolve())
    return f"{link} now links the lab's inventory (the default without --inventory)"


def unlink_inventory(home: Path) -> None:
    """Remove the home's link to the lab's inventory (never an inventory of the user's own)."""
    link = home / "inventory.yaml"
    if link.is_symlink() and link.resolve() == LAB_INVENTORY.resolve():
        link.unlink()


def services(home: Path, only: list[str] | None = None) -> list[LabService]:
    names = list(SERVICES)
    if only:
        unknown = [n for n in only if n not in names]
        if unknown:
            from estate.errors import InputError
            raise InputError(f"unknown lab service {', '.join(unknown)} (known: {', '.join(names) or 'none'})")
        names = [n for n in names if n in only]
    return [import_module(f"{__name__}.{n}").Service(home) for n in names]
