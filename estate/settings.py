"""Where Skydd keeps its state. Environment variables are read here and in the CLI only."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PLAYBOOKS_DIR = REPO_ROOT / "playbooks"
CACHE_DIR = Path(os.environ.get("SKYDD_CACHE", REPO_ROOT / ".cache"))


@dataclass(frozen=True)
class Settings:
    home: Path

    @staticmethod
    def from_env() -> "Settings":
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
    def lab(self) -> Path:
        return self.home / "lab"

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    def ensure(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
