from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from policies.checks import parse_check, parse_path
from policies.errors import CatalogError, EvidenceMissing

AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def ok(spec, data) -> bool:
    return parse_check(spec, "t.yaml").evaluate(data, AT).ok


def test_paths_with_quoted_keys_and_indices() -> None:
    assert parse_path('opts["UserVars.ESXiShellTimeOut"].value[2]') == (
        "opts", "UserVars.ESXiShellTimeOut", "value", 2)
    with pytest.raises(ValueError):
        parse_path("a..b[")


@pytest.mark.parametrize("spec,data,expected", [
    ({"path": "a", "equals": 1}, {"a": 1}, True),
    ({"path": "a", "equals": 1}, {"a": 2}, False),
    ({"path": "a", "one_of": ["x", "y"]}, {"a": "y"}, True),
    ({"path": "a", "at_least": 5}, {"a": 4}, False),
    ({"path": "a", "at_most": 5}, {"a": 5}, True),
    ({"path": "a", "matches": "length\\(\\d+\\)"}, {"a": "length(12)"}, True),
    ({"path": "a", "contains": "otp"}, {"a": ["card", "otp"]}, True),
    ({"path": "l", "every": {"path": "on", "equals": True}}, {"l": [{"on": True}, {"on": False}]}, False),
    ({"path": "l", "any": {"path": "on", "equals": True}}, {"l": [{"on": False}, {"on": True}]}, True),
    ({"any_of": [{"path": "a", "equals": 1}, {"path": "b", "equals": 2}]}, {"a": 0, "b": 2}, True),
    ({"not": {"path": "a", "equals": 1}}, {"a": 1}, False),
])
def test_operators(spec, data, expected) -> None:
    assert ok(spec, data) is expected


def test_age_within_uses_injected_time() -> None:
    spec = {"path": "updated", "age_within": "7d"}
    assert ok(spec, {"updated": (AT - timedelta(days=6)).isoformat()})
    assert not ok(spec, {"updated": (AT - timedelta(days=8)).isoformat()})


@pytest.mark.parametrize("spec,data", [
    ({"path": "a.b", "equals": 1}, {"a": {}}),
    ({"path": "a", "at_least": 1}, {"a": "many"}),
    ({"path": "l", "every": {"path": "x", "equals": 1}}, {"l": []}),
    ({"path": "t", "age_within": "1d"}, {"t": "2026-11-25T10:00:00"}),  # naive: refused
    ({"any_of": [{"path": "x", "equals": 1}, {"path": "a", "equals": 2}]}, {"a": 3}),
])
def test_unobservable_evidence_is_never_a_pass(spec, data) -> None:
    with pytest.raises(EvidenceMissing):
        parse_check(spec, "t.yaml").evaluate(data, AT)


@pytest.mark.parametrize("spec,key", [
    ({"path": "a", "equal": 1}, "check.equal"),
    ({"python": "no_such_check"}, "check.python"),
    ({"frobnicate": 1}, "check.frobnicate"),
    ({"path": "a", "age_within": "a week"}, "check.age_within"),
    ({"all_of": []}, "check.all_of"),
])
def test_bad_checks_name_the_key(spec, key) -> None:
    with pytest.raises(CatalogError) as info:
        parse_check(spec, "x/control.yaml")
    assert info.value.key == key and info.value.path == "x/control.yaml"
