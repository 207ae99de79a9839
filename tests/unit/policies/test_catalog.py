"""Every control against its fixtures, and the catalog's shape."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from policies import Status, load_catalog, load_fixtures
from policies.engine import check_status

CATALOG = load_catalog()
FIXTURES = load_fixtures(CATALOG)
AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("fx", FIXTURES, ids=lambda f: f"{f.control.id}:{f.name}")
def test_control_fixture(fx) -> None:
    status, message, _ = check_status(fx.control, fx.control.check, fx.data, AT)
    assert status.value == fx.expected, message


def test_every_control_has_passing_and_failing_fixtures() -> None:
    seen = Counter((f.control.id, f.expected) for f in FIXTURES)
    for c in CATALOG.controls:
        assert seen[(c.id, "pass")] >= 1, f"{c.id} has no .pass fixture"
        bad = "manual" if c.manual else "fail"
        assert seen[(c.id, bad)] >= 1, f"{c.id} has no .{bad} fixture"
    assert len({f.control.id for f in FIXTURES}) == len(CATALOG.controls)


def test_fixture_statuses_are_known() -> None:
    assert {f.expected for f in FIXTURES} <= {s.value for s in Status}
