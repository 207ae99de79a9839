"""Where Skydd keeps its state. Environment variables are read here and in the CLI only."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

# The folder holding Skydd's top-level packages: a checkout, or site-packages once installed. The
# playbooks sit beside the packages in both (docs/adr/0010-packaging.md).
INSTALL_ROOT = Path(__file__).resolve().parent.parent
PLAYBOOKS_DIR = INSTALL_ROOT / "playbooks"


def cache_dir(root: Path, env: Mapping[str, str]) -> Path:
    """Where downloads and builds are cached: ``SKYDD_CACHE``; else a checkout's ``.cache``; else
    (an installed tool, never inside site-packages) ``$XDG_CACHE_HOME/skydd`` or ``~/.cache/skydd``."""
    if env.get("SKYDD_CACHE"):
        return Path(env["SKYDD_CACHE"])
    if (root / "pyproject.toml").is_file():
        return root / ".cache"
    xdg = env.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"  # relative: ignored (XDG spec)
    return base / "skydd"


CACHE_DIR = cache_dir(INSTALL_ROOT, os.environ)
DEFAULT_WAIVER_MAX_DAYS = 365


@dataclass(frozen=True)
class Settings:
    home: Path

    @staticmethod
    def from_env() -> Settings:
        return Settings(home=Path(os.environ.get("SKYDD_HOME", "./.skydd")).resolve())

    @property
    def keys(self) -> Path:
        return self.home / "keys"

    @property
    def audit_log(self) -> Path:
        return self.home / "audit.log"

    @property
    def history_url(self) -> str:
        return os.environ.get("SKYDD_HISTORY_URL", f"sqlite:///{self.home / 'history.db'}")

    @property
    def waiver_max_days(self) -> int:
        """The longest a waiver may last, request to expiry: ``SKYDD_WAIVER_MAX_DAYS`` (365)."""
        raw = os.environ.get("SKYDD_WAIVER_MAX_DAYS", "").strip()
        if not raw:
            return DEFAULT_WAIVER_MAX_DAYS
        if not raw.isdigit() or not 1 <= int(raw) <= 36500:
            raise InputError(f"SKYDD_WAIVER_MAX_DAYS={raw!r}: give a whole number of days, 1 to 36500")
        return int(raw)

    @property
    def home_inventory(self) -> Path:
        """The home's default inventory (``skydd lab up`` links the lab's here)."""
        return self.home / "inventory.yaml"

    def inventory(self, given: Path | None = None) -> Path:
        """The inventory a command works on: ``given`` (``--inventory``), else ``SKYDD_INVENTORY``,
        else ``$SKYDD_HOME/inventory.yaml``; none of them: ``InputError`` (exit 2). Never the lab's
        unless the lab put it there: a municipality's Skydd never audits the example estate by
        accident."""
        if given is not None:
            return given
        env = os.environ.get("SKYDD_INVENTORY", "").strip()
        if env:
            return Path(env)
        if self.home_inventory.is_file():
            return self.home_inventory.resolve()  # a link to the lab's: its own folder for relative paths
        raise InputError(f"no inventory: give --inventory FILE, set SKYDD_INVENTORY, or put one at "
                         f"{self.home_inventory} (`skydd lab up` links the lab's there)")

    @property
    def lab(self) -> Path:
        return self.home / "lab"

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    def ensure(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
