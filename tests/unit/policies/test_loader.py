"""The strict loader: unknown keys, missing fields and unknown checks name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies import CatalogError, load_catalog
from policies.loader import CATALOG_DIR

EXAMPLE = CATALOG_DIR / "d" / "d.key-files-private" / "control.yaml"


def catalog_with(tmp_path: Path, text: str, cid: str = "d.key-files-private") -> Path:
    d = tmp_path / "catalog" / cid[0] / cid
    d.mkdir(parents=True)
    (d / "control.yaml").write_text(text)
    return tmp_path / "catalog"


@pytest.mark.parametrize("edit,key", [
    (lambda t: t + "owner: someone\n", "owner"),
    (lambda t: t.replace("severity: high\n", ""), "severity"),
    (lambda t: t.replace("python: files_private", "python: no_such"), "check.python"),
    (lambda t: t.replace("severity: high", "severity: extreme"), "severity"),
    (lambda t: t.replace("[A.5.17, A.8.24]", "[A.99.1]"), "references.iso27001-2022"),
    (lambda t: t.replace("  nis2:", "  nist:"), "references.nist"),
    (lambda t: t.replace("tags: [d.key-files-private]", "tags: []"), "remediation.tags"),
    (lambda t: t.replace("id: d.key-files-private", "id: d.other"), "id"),
])
def test_errors_name_file_and_key(tmp_path: Path, edit, key) -> None:
    root = catalog_with(tmp_path, edit(EXAMPLE.read_text()))
    with pytest.raises(CatalogError) as info:
        load_catalog(root)
    assert info.value.key == key
    assert str(info.value).startswith(str(root / "d" / "d.key-files-private" / "control.yaml"))


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    root = catalog_with(tmp_path, "id: d.x\nlevel: [\n")
    with pytest.raises(CatalogError, match=r"line \d+"):
        load_catalog(root)


def test_empty_catalog_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "catalog").mkdir()
    with pytest.raises(CatalogError, match="no controls"):
        load_catalog(tmp_path / "catalog")


def test_shipped_catalog_covers_every_level() -> None:
    cat = load_catalog()
    assert len({c.id for c in cat.controls}) == len(cat.controls)
    for c in cat.controls:
        assert c.references.get("iso27001-2022") and c.references.get("nis2"), c.id


def test_profiles_name_what_they_leave_out_and_why(tmp_path: Path) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "no-kms.yaml").write_text(
        "id: no-kms\ntitle: t\ndescription: d\nexclude: {c.vm-encryption: '  No key provider yet. '}\n")
    shipped = load_catalog()
    cat = load_catalog(profiles_dir=tmp_path / "profiles")
    assert cat.profiles["no-kms"].exclude == {"c.vm-encryption": "No key provider yet."}
    assert cat.digest != shipped.digest  # a profile is part of what the report's digest covers


@pytest.mark.parametrize("body,key", [
    ("id: p\ntitle: t\ndescription: d\nexclude: {d.nope: gone}\n", "exclude.d.nope"),
    ("id: p\ntitle: t\ndescription: d\nexclude: {d.key-files-private: ''}\n", "exclude.d.key-files-private"),
    ("id: q\ntitle: t\ndescription: d\nexclude: {}\n", "id"),
])
def test_bad_profiles_are_load_errors(tmp_path: Path, body: str, key: str) -> None:
    root = catalog_with(tmp_path, EXAMPLE.read_text())
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "p.yaml").write_text(body)
    with pytest.raises(CatalogError) as info:
        load_catalog(root, profiles_dir=tmp_path / "profiles")
    assert info.value.key == key


# -- hostile input is bad input (issue 12): the catalog reads YAML through estate.documents -----

@pytest.mark.timeout(10)
@pytest.mark.parametrize("edit,problem", [
    (lambda t: t.replace("severity: high", "severity: &s high\nx: [*s, *s]"), "YAML anchors are not allowed (&s)"),
    (lambda t: t + "extra: " + "[" * 2000 + "]" * 2000 + "\n", "nested deeper than 64 levels"),
    (lambda t: t.replace("severity: high", "severity: !!python/name:os.system"), "YAML tag"),
    (lambda t: t + "severity: low\n", "duplicate key"),
    (lambda t: t.replace("severity: high", "severity: \x07high"), "not valid YAML"),
])
def test_hostile_control_yaml_is_a_catalog_error_with_the_line(tmp_path: Path, edit, problem) -> None:
    root = catalog_with(tmp_path, edit(EXAMPLE.read_text()))
    with pytest.raises(CatalogError) as info:
        load_catalog(root)
    assert problem in info.value.problem
    assert info.value.key is not None and info.value.key.startswith("line ")
    assert info.value.exit_code == 2


def test_an_oversized_control_is_refused_before_it_is_read_whole(tmp_path: Path) -> None:
    from estate.documents import MAX_DOCUMENT_BYTES

    root = catalog_with(tmp_path, EXAMPLE.read_text() + "#" * MAX_DOCUMENT_BYTES)
    with pytest.raises(CatalogError, match="larger than the limit"):
        load_catalog(root)


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    root = catalog_with(tmp_path, "")
    (root / "d" / "d.key-files-private" / "control.yaml").write_bytes(b"id: d.x\ntitle: \xc3\x28\n")
    with pytest.raises(CatalogError, match="not UTF-8") as info:
        load_catalog(root)
    assert info.value.key == "line 2"


def test_the_shipped_catalog_frameworks_and_fixtures_fit_the_limits() -> None:
    from policies.loader import load_fixtures

    cat = load_catalog()
    assert len(cat.frameworks) >= 3 and len(cat.controls) > 20
    assert len(load_fixtures(cat)) >= 2 * len([c for c in cat.controls if c.check is not None])
