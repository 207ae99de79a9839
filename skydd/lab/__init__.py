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


def services(home: Path, only: list[str] | None = None) -> list[LabService]:
    names = list(SERVICES)
    if only:
        unknown = [n for n in only if n not in names]
        if unknown:
            from estate.errors import InputError
            raise InputError(f"unknown lab service {', '.join(unknown)} (known: {', '.join(names) or 'none'})")
        names = [n for n in names if n in only]
    return [import_module(f"{__name__}.{n}").Service(home) for n in names]
