"""Shared fixtures. Lab tests need root and real services; in CI (CI=true) a missing service
fails the run instead of skipping."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Commands without --inventory work on $SKYDD_INVENTORY: in tests, the lab's (the example estate),
# also for the skydd processes tests start. tests/unit/skydd/test_default_inventory.py unsets it.
os.environ.setdefault("SKYDD_INVENTORY", str(REPO / "skydd" / "lab" / "inventory.yaml"))


_MARKED_FOLDERS = {"lab": pytest.mark.lab, "browser": pytest.mark.browser}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under tests/lab carry the ``lab`` marker, under tests/browser ``browser``."""
    root = Path(__file__).parent
    for item in items:
        parts = Path(str(item.fspath)).relative_to(root).parts
        if parts and parts[0] in _MARKED_FOLDERS:
            item.add_marker(_MARKED_FOLDERS[parts[0]])


@pytest.fixture
def skydd_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("SKYDD_HOME", str(home))
    monkeypatch.delenv("SKYDD_HISTORY_URL", raising=False)
    return home


@pytest.fixture
def at() -> datetime:
    return datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def require_root() -> None:
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("lab tests need root in CI")
        pytest.skip("lab tests need root")
