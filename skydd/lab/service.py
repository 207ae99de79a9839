"""The interface of one local lab service (Keycloak, the network namespaces, vcsim, PostgreSQL).

``up`` is idempotent and cleans up what a crashed earlier run left; ``down`` stops only what the
lab started (by PID files and names under ``$SKYDD_HOME/lab``); ``status`` never raises.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from estate.inventory import Inventory

Progress = Callable[[str], None]


class LabService(abc.ABC):
    name: str

    def __init__(self, home: Path) -> None:
        self.home = home
        self.state_dir = home / "lab" / self.name
        self.inventory_path: Path | None = None  # None: the lab inventory

    def _inventory(self) -> Inventory:
        """The inventory the lab is built from; a bad one is a ``LabError`` naming the problem."""
        from estate.errors import InputError
        from estate.loader import load_inventory

        from . import LAB_INVENTORY
        from .errors import LabError

        try:
            inv, _ = load_inventory(self.inventory_path or LAB_INVENTORY, home=self.home)
        except InputError as err:
            raise LabError(str(err)) from err
        return inv

    @abc.abstractmethod
    def up(self, progress: Progress) -> None:
        """Start (or adopt) the service unhardened, wait until ready; raise ``LabError``."""

    @abc.abstractmethod
    def down(self, progress: Progress) -> None:
        """Stop what ``up`` started and remove what it made; raise ``LabError``."""

    @abc.abstractmethod
    def status(self) -> dict[str, Any]:
        """``{"state": "up"|"down", "endpoint": ...}`` plus anything scripts need."""
