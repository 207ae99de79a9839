"""The ESXi patch baseline: the shipped file loads with a bundle per release, and a release whose
offline bundle name is malformed or belongs to another build is a catalog error."""

from __future__ import annotations

from typing import Any

import pytest

from policies.errors import CatalogError
from policies.named.level_c import load_baseline, parse_baseline


def doc(**release: Any) -> dict[str, Any]:
    base = {"build": 24784735, "release": "ESXi 8.0 Update 3f", "released": "2025-07-15",
            "fixes": ["VMSA-2025-0013"]}
    return {"schema": "skydd.esxi-baseline/1", "versions": {"8.0": [{**base, **release}]}}


def test_every_shipped_release_names_its_bundle() -> None:
    baseline = load_baseline("esxi-baseline")
    assert baseline["8.0"][-1]["bundle"] == "VMware-ESXi-8.0U3f-24784735-depot.zip"
    assert baseline["7.0"][-1]["bundle"] == "VMware-ESXi-7.0U3w-24784741-depot.zip"
    assert all(r["bundle"].endswith(f"-{r['build']}-depot.zip") for rs in baseline.values() for r in rs)


@pytest.mark.parametrize("bundle", [
    "VMware-ESXi-8.0U3f-24784735-depot.zip",
    "VMware-ESXi-8.0-24784735-depot.zip",
    "VMware-ESXi-8.0U3-24784735-depot.zip",
])
def test_good_bundle_names(bundle: str) -> None:
    assert parse_baseline(doc(bundle=bundle), "b.yaml")["8.0"][0]["bundle"] == bundle


def test_bundle_is_optional() -> None:
    assert "bundle" not in parse_baseline(doc(), "b.yaml")["8.0"][0]


@pytest.mark.parametrize("bundle,problem", [
    ("VMware-ESXi-8.0U3f-24784735.zip", "not an offline bundle name"),
    ("esxi-8.0u3f.zip", "not an offline bundle name"),
    (["VMware-ESXi-8.0U3f-24784735-depot.zip"], "not an offline bundle name"),
    ("VMware-ESXi-8.0U3f-24784736-depot.zip", "build 24784736, not 8.0 build 24784735"),
    ("VMware-ESXi-7.0U3f-24784735-depot.zip", "ESXi 7.0 build 24784735, not 8.0"),
])
def test_bad_bundle_is_a_catalog_error(bundle: Any, problem: str) -> None:
    with pytest.raises(CatalogError) as info:
        parse_baseline(doc(bundle=bundle), "b.yaml")
    assert info.value.key == "versions.8.0[0].bundle"
    assert problem in str(info.value) and str(info.value).startswith("b.yaml: ")
