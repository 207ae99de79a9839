"""Fixtures shared by unit tests of several packages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.identity.fake_idp import FakeIdp


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeIdp]:
    """A test identity provider serving a realm's keys over real HTTPS on loopback (one per module,
    so request counts stay per module)."""
    server = FakeIdp(tmp_path_factory.mktemp("idp"))
    yield server
    server.stop()
