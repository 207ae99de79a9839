"""The inventory loader: the lab inventory loads; a bad one is one error naming file, line, field."""

from __future__ import annotations

from pathlib import Path

import pytest
from ruamel.yaml import YAML

from estate.errors import InputError
from estate.loader import load_inventory
from estate.secrets import resolve_secret
from skydd.lab import LAB_INVENTORY

LAB = LAB_INVENTORY.read_text()


def test_lab_inventory_names_the_three_municipalities_and_the_fourth_site(tmp_path: Path) -> None:
    inv, digest = load_inventory(LAB_INVENTORY, home=tmp_path)
    assert {m.id for m in inv.municipalities} == {"torsby", "sunne", "hagfors"}
    assert any(s.municipality is None for s in inv.sites)
    care = next(s for s in inv.systems if s.id == "socialcare")
    assert care.classification == "classified" and care.around_the_clock
    assert care.mirror_site != care.primary_site
    assert all(s.mirror_site == "site4" for s in inv.systems)
    assert digest.startswith("sha256:")
    assert inv.identity_provider.admin_password.startswith(f"file:{tmp_path}")


@pytest.mark.parametrize("old,new,where", [
    ("name: socialcare-lab", "name: socialcare-lab\ncolour: blue", "colour: unknown field"),
    ("mirror_site: site4\n    rpo_seconds", "mirror_site: site9\n    rpo_seconds", "systems.0.mirror_site: unknown site"),
    ("classification: classified", "classification: secret", "systems.0.classification"),
    ("admin_password: file:", "admin_password: hunter2 #", "identity_provider.admin_password: secrets must be a reference"),
])
def test_bad_inventory_names_file_line_and_field(tmp_path: Path, old, new, where) -> None:
    assert old in LAB
    bad = tmp_path / "inv.yaml"
    bad.write_text(LAB.replace(old, new, 1))
    with pytest.raises(InputError) as info:
        load_inventory(bad, home=tmp_path)
    msg = str(info.value)
    assert msg.startswith(f"{bad}:") and where in msg
    line = int(msg.split(":")[1])
    assert line > 1


def _with_depot(tmp_path: Path, depot: str) -> Path:
    """The lab inventory with ``patch_depot`` set on its first hypervisor."""
    yaml = YAML(typ="rt")
    doc = yaml.load(LAB)
    doc["hypervisors"][0]["patch_depot"] = depot
    out = tmp_path / "inv.yaml"
    with out.open("w") as fh:
        yaml.dump(doc, fh)
    return out


@pytest.mark.parametrize("depot", ["https://depot.socialcare.lab/esxi/", "file://${SKYDD_HOME}/depot"])
def test_patch_depot_is_an_https_or_file_folder(tmp_path: Path, depot: str) -> None:
    inv, _ = load_inventory(_with_depot(tmp_path, depot), home=tmp_path)
    assert inv.hypervisors[0].patch_depot == depot.replace("${SKYDD_HOME}", str(tmp_path))


@pytest.mark.parametrize("depot", ["http://depot.lab/esxi/", "/srv/depot", "file://", "ftp://x/"])
def test_bad_patch_depot_names_file_line_and_field(tmp_path: Path, depot: str) -> None:
    path = _with_depot(tmp_path, depot)
    with pytest.raises(InputError) as info:
        load_inventory(path, home=tmp_path)
    msg = str(info.value)
    line = int(msg.split(":")[1])
    assert "patch_depot" in path.read_text().splitlines()[line - 1]
    assert msg.startswith(f"{path}:") and "hypervisors.0.patch_depot: must be an https://" in msg


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "inv.yaml"
    bad.write_text("name: [x\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_inventory(bad, home=tmp_path)
    with pytest.raises(InputError, match="cannot read"):
        load_inventory(tmp_path / "absent.yaml", home=tmp_path)


def test_secret_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "s").write_text("geheim\n")
    assert resolve_secret(f"file:{tmp_path / 's'}") == "geheim"
    monkeypatch.setenv("SKYDD_T", "x")
    assert resolve_secret("env:SKYDD_T") == "x"
    with pytest.raises(InputError, match="SKYDD_NOPE"):
        resolve_secret("env:SKYDD_NOPE")
