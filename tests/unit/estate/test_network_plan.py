"""The network plan the firewall roles, the collectors and the lab share: which declared flows
cross which firewall, and the plan's command-line form for the playbooks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from estate.errors import InputError
from estate.loader import load_inventory
from estate.network_plan import firewall, firewall_plan, inside_segment, main
from skydd.lab import LAB_INVENTORY

INV, _ = load_inventory(LAB_INVENTORY, home=Path("/srv/skydd"))


@pytest.mark.parametrize("muni, lan", [("torsby", "10.1.1.0/24"), ("sunne", "10.2.1.0/24"),
                                       ("hagfors", "10.3.1.0/24")])
def test_both_firewalls_of_a_municipality_carry_its_lan_flow_to_dc(muni: str, lan: str) -> None:
    for pos in (1, 2):
        plan = firewall_plan(INV, firewall(INV, f"{muni}-fw{pos}"))
        assert plan["lan"] == lan and plan["table"] == f"skydd_fw{pos}"
        assert [(f["id"], f["saddr"], f["daddr"], f["port"]) for f in plan["flows"]] == [
            ("staff-https", lan, "10.0.10.0/24", 443)]
        assert plan["protects_classified"] and plan["fail_mode"] == "closed"
        assert plan["state_dir"] == f"/srv/skydd/lab/network/{muni}-fw{pos}"


def test_the_mirror_flow_crosses_no_municipal_firewall() -> None:
    for fw in INV.firewalls:
        assert "mirror-pg" not in {f["id"] for f in firewall_plan(INV, fw)["flows"]}


def test_fw2_finds_the_lan_behind_fw1() -> None:
    seg = inside_segment(INV, firewall(INV, "hagfors-fw2"))
    assert seg is not None and (seg.name, seg.network) == ("lan", "10.3.1.0/24")


def test_unknown_firewall_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InputError, match="no firewall 'nope'"):
        firewall(INV, "nope")
    assert main(["--inventory", str(LAB_INVENTORY), "nope"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_command_line_prints_the_plan_as_json(capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYDD_HOME", "/srv/skydd")
    assert main(["--inventory", str(LAB_INVENTORY), "sunne-fw2"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["id"] == "sunne-fw2" and plan["ips"] is True and plan["position"] == 2
