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
    ("mirror_site: site4\n    rpo_seconds", "mirror_site: site9\n    rpo_seconds",
     "systems.0.mirror_site: unknown site"),
    ("classification: classified", "classification: secret", "systems.0.classification"),
    ("admin_password: file:", "admin_password: hunter2 #",
     "identity_provider.admin_password: secrets must be a reference"),
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


# -- hostile input is bad input (issue 12) ----------------------------------------------------

BOMB = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10))
BILLION_LAUGHS = "name: x\nl0: &l0 lol\n" + BOMB + "municipalities: *l9\nsites: []\n"


def _write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "inv.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.timeout(10)
def test_an_alias_bomb_is_refused_at_its_first_anchor_without_expanding(tmp_path: Path) -> None:
    path = _write(tmp_path, BILLION_LAUGHS)
    with pytest.raises(InputError) as info:
        load_inventory(path, home=tmp_path)
    assert str(info.value).startswith(f"{path}:2: YAML anchors are not allowed (&l0)")


@pytest.mark.timeout(10)
@pytest.mark.parametrize("opener,closer", [("[", "]"), ("{", "}")])
def test_two_thousand_nested_brackets_are_bad_input_not_a_recursion_error(tmp_path: Path, opener, closer) -> None:
    path = _write(tmp_path, "name: " + opener * 2000 + closer * 2000 + "\n")
    with pytest.raises(InputError, match=r":1: nested deeper than 64 levels"):
        load_inventory(path, home=tmp_path)


SMALL = """name: small
municipalities:
  - {id: torsby, name: Torsby}
  - {id: sunne, name: Sunne}
  - {id: torsby, name: Torsby again}
sites:
  - id: torsby
    name: Torsby
    municipality: torsby
    segments:
      - {name: lan, network: 10.1.1.0/24, host: 10.1.1.2, gateway: 10.1.1.1}
      - {name: dc, network: 10.0.10.0/24, host: 10.0.10.2, gateway: 10.0.10.1}
      - {name: lan, network: 10.1.2.0/24, host: 10.1.2.2, gateway: 10.1.2.1}
key_stores:
  - {id: pki, site: torsby, path: /srv/a}
  - {id: pki, site: torsby, path: /srv/b}
"""


@pytest.mark.parametrize("keep,message", [
    ("municipalities", ":5: municipalities.2.id: duplicate id 'torsby' (first at {p}:3: municipalities.0.id)"),
    ("key_stores", ":16: key_stores.1.id: duplicate id 'pki' (first at {p}:15: key_stores.0.id)"),
    ("segments", ":13: sites.0.segments.2.name: duplicate name 'lan' (first at {p}:11: sites.0.segments.0.name)"),
])
def test_a_duplicate_id_is_refused_naming_both_places(tmp_path: Path, keep: str, message: str) -> None:
    """Each case leaves only its own duplicate in place (the others are renamed)."""
    text = SMALL
    if keep != "municipalities":
        text = text.replace("{id: torsby, name: Torsby again}", "{id: hagfors, name: Hagfors}")
    if keep != "key_stores":
        text = text.replace("{id: pki, site: torsby, path: /srv/b}", "{id: pki2, site: torsby, path: /srv/b}")
    if keep != "segments":
        text = text.replace("{name: lan, network: 10.1.2.0/24", "{name: lan2, network: 10.1.2.0/24")
    path = _write(tmp_path, text)
    with pytest.raises(InputError) as info:
        load_inventory(path, home=tmp_path)
    assert str(info.value) == f"{path}" + message.format(p=path)


def test_a_client_named_twice_is_refused_naming_both_places(tmp_path: Path) -> None:
    assert "clients: [socialcare-app, skydd-dashboard, skydd-console]" in LAB
    path = _write(tmp_path, LAB.replace("clients: [socialcare-app, skydd-dashboard, skydd-console]",
                                        "clients: [socialcare-app, skydd-dashboard, socialcare-app]"))
    with pytest.raises(InputError, match=r"identity_provider\.clients\.2: duplicate entry 'socialcare-app' "
                                         r"\(first at .*identity_provider\.clients\.0\)"):
        load_inventory(path, home=tmp_path)


def test_the_fixed_small_inventory_loads(tmp_path: Path) -> None:
    text = (SMALL.replace("{id: torsby, name: Torsby again}", "{id: hagfors, name: Hagfors}")
            .replace("{id: pki, site: torsby, path: /srv/b}",
                                                   "{id: pki2, site: torsby, path: /srv/b}")
            .replace("{name: lan, network: 10.1.2.0/24", "{name: lan2, network: 10.1.2.0/24"))
    inv, _ = load_inventory(_write(tmp_path, text), home=tmp_path)
    assert [k.id for k in inv.key_stores] == ["pki", "pki2"]


def test_the_same_name_in_two_lists_is_not_a_duplicate(tmp_path: Path) -> None:
    inv, _ = load_inventory(LAB_INVENTORY, home=tmp_path)  # site torsby and municipality torsby
    assert "torsby" in {m.id for m in inv.municipalities} & {s.id for s in inv.sites}


@pytest.mark.parametrize("text,needle", [
    (LAB + "name: again\n", "duplicate key"),
    (LAB.replace("name: socialcare-lab", "name: !!python/object/apply:os.system [id]"), "YAML tag"),
    (LAB.replace("name: socialcare-lab", "name: \x00"), "not valid YAML"),
    (LAB.encode().replace(b"Torsby kommunhus", b"Torsby \xff kommunhus"), "not UTF-8 text"),
    (LAB.replace("name: socialcare-lab", "name: socialcare-lab\nx: 1" + "0" * 5000), "a value cannot be read"),
    ("name: x\n" + "#" * (600 * 1024) + "\n", "larger than the limit"),
])
def test_hostile_inventory_text_is_one_input_error(tmp_path: Path, text, needle) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(InputError, match=needle) as info:
        load_inventory(path, home=tmp_path)
    assert str(info.value).startswith(f"{path}:") and "\n" not in str(info.value)


def test_a_byte_order_mark_is_allowed(tmp_path: Path) -> None:
    _, digest = load_inventory(_write(tmp_path, b"\xef\xbb\xbf" + LAB.encode()), home=tmp_path)
    assert digest == load_inventory(LAB_INVENTORY, home=tmp_path)[1]
