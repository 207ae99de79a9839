"""Shared fixtures. Lab tests need root and real services; in CI (CI=true) a missing service
fails the run instead of skipping."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Commands without --inventory work on $SKYDD_INVENTORY: in tests, the lab's (the example estate),
# also for the skydd processes tests start. tests/unit/skydd/test_default_inventory.py unsets it.
os.environ.setdefault("SKYDD_INVENTORY", str(REPO / "skydd" / "lab" / "inventory.yaml"))


_MARKED_FOLDERS = {"lab": pytest.mark.lab, "browser": pytest.mark.browser}


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (a CI timeout, ``kill``) unwinds like Ctrl-C, so the session's teardown still takes
    the lab down: no namespace, sshd, Keycloak or vcsim is left running under a home that
    ``make test`` then deletes."""
    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under tests/lab carry the ``lab`` marker, under tests/browser ``browser``. Browser
    tests of the lab run after every other test: they harden the shared lab (level d), and the
    lab tests start from the lab as found."""
    root = Path(__file__).parent
    for item in items:
        parts = Path(str(item.fspath)).relative_to(root).parts
        if parts and parts[0] in _MARKED_FOLDERS:
            item.add_marker(_MARKED_FOLDERS[parts[0]])
    items.sort(key=lambda i: i.get_closest_marker("browser") is not None and i.get_closest_marker("lab") is not None)


@pytest.fixture
def skydd_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("SKYDD_HOME", str(home))
    monkeypatch.delenv("SKYDD_HISTORY_URL", raising=False)
    return home


@pytest.fixture
def at() -> datetime:
    return datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def lab_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    require_root()
    home = Path(os.environ.get("SKYDD_LAB_HOME") or tmp_path_factory.mktemp("lab-home"))
    old = os.environ.get("SKYDD_HOME")
    os.environ["SKYDD_HOME"] = str(home)
    yield home
    from tests.lab.conftest import _started

    for svc in reversed(_started):
        try:
            svc.down(lambda msg: None)
        except Exception as err:  # report, but let the other services stop too
            print(f"lab teardown: {svc.name}: {err}")
    _started.clear()
    if old is None:
        os.environ.pop("SKYDD_HOME", None)
    else:
        os.environ["SKYDD_HOME"] = old


def unavailable(message: str) -> NoReturn:
    """A tool or service the test needs is missing: in CI that fails the run, elsewhere it skips."""
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def require_root() -> None:
    if os.geteuid() != 0:
        unavailable("lab tests need root")


def skewed_clock(offset: str) -> list[str]:
    """The command prefix that runs a process whose clock is ``offset`` ("+10m", "-10m") off the
    machine's: libfaketime (Debian ``faketime``), wall clock only (timeouts keep real time)."""
    tool = shutil.which("faketime")
    if tool is None:
        unavailable("faketime is missing: run 'make deps' (Debian package faketime)")
    return ["env", "FAKETIME_DONT_FAKE_MONOTONIC=1", tool, "-f", offset]
