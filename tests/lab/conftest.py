"""Lab fixtures: one real service per session, started through ``skydd.lab`` and stopped at the
end. All lab tests share one ``SKYDD_HOME`` (``lab_home``). In CI a service that cannot start
fails the tests that need it; outside CI as non-root the lab tests skip."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_root
from tests.lab.ssh_hosts import lab  # noqa: F401 (fixture: real SSH hosts of a test's own; modules may override)

_started: list[Any] = []


@pytest.fixture(scope="session")
def lab_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    require_root()
    home = Path(os.environ.get("SKYDD_LAB_HOME") or tmp_path_factory.mktemp("lab-home"))
    old = os.environ.get("SKYDD_HOME")
    os.environ["SKYDD_HOME"] = str(home)
    yield home
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


def ensure_lab(name: str, home: Path) -> dict[str, Any]:
    """Bring one lab service up once per session and return its status."""
    from skydd.lab import services

    (svc,) = services(home, [name])
    if not any(s.name == name for s in _started):
        svc.up(lambda msg: print(f"lab {name}: {msg}"))
        _started.append(svc)
    status = svc.status()
    assert status["state"] == "up", f"lab service {name} is not up: {status}"
    return status
