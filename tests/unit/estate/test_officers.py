"""The officer roster in the inventory (issue 13 item 3): ids and subjects are unique."""

from __future__ import annotations

from pathlib import Path

import pytest

from estate.errors import InputError
from estate.loader import load_inventory
from skydd.lab import LAB_INVENTORY

BASE = """
name: test
municipalities: [{id: torsby, name: Torsby}]
sites: [{id: torsby, name: Torsby, municipality: torsby}]
officers:
"""


def test_the_lab_roster_names_the_two_console_officers(tmp_path: Path) -> None:
    inv, _ = load_inventory(LAB_INVENTORY, home=tmp_path)
    assert [(o.id, o.subject) for o in inv.officers] == [
        ("greta.officer", "5e1f0a11-0000-4000-8000-000000000001"),
        ("olof.officer", "5e1f0a11-0000-4000-8000-000000000002")]
    assert inv.officers[0].public_key == f"{tmp_path}/lab/officers/greta.officer.pub.pem"


@pytest.mark.parametrize("second,needle", [
    ("{id: a.officer, name: B, subject: s2, public_key: b.pem}", "officer id a.officer"),
    ("{id: b.officer, name: B, subject: s1, public_key: b.pem}", "officer subject s1"),
])
def test_an_officer_twice_is_refused(tmp_path: Path, second: str, needle: str) -> None:
    p = tmp_path / "inv.yaml"
    p.write_text(BASE + "  - {id: a.officer, name: A, subject: s1, public_key: a.pem}\n  - " + second + "\n")
    with pytest.raises(InputError, match=needle):
        load_inventory(p, home=tmp_path)


def test_an_officer_without_a_subject_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "inv.yaml"
    p.write_text(BASE + "  - {id: a.officer, name: A, subject: '', public_key: a.pem}\n")
    with pytest.raises(InputError, match="subject"):
        load_inventory(p, home=tmp_path)
