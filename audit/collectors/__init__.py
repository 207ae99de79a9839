"""Collectors, one module per evidence source. Each module offers
``from_inventory(inventory, home) -> list[Collector]``; this package gathers them."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import import_module
from pathlib import Path
from typing import Any

from .interface import Collector, CollectorError, Observation, run_collectors

# Every collector module; a level adds its own here.
MODULES = ("files", "training", "vsphere", "keycloak", "attestation", "nftables", "suricata", "traffic", "postgres")


def collectors_for(inventory: Any, home: Path, kinds: Iterable[str]) -> list[Collector]:
    """The collectors of the inventory that produce any of ``kinds``."""
    wanted = set(kinds)
    out: list[Collector] = []
    for name in MODULES:
        module = import_module(f"{__name__}.{name}")
        out.extend(c for c in module.from_inventory(inventory, home) if wanted & set(c.kinds))
    return out


__all__ = ["Collector", "CollectorError", "Observation", "collectors_for", "run_collectors"]
