"""The traffic proof's plan without a network: which machines each municipality's collectors
reach (all over SSH), how a gateway address is known as a firewall, and that a machine without
an ssh connection is an ``error`` naming it before any packet is sent."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from audit.collectors import run_collectors
from audit.collectors.traffic import PathCollector, TrafficCollector, _link_owners, from_inventory
from estate.loader import load_inventory
from skydd.lab import LAB_INVENTORY

AT = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _collectors(tmp_path: Path) -> list[PathCollector | TrafficCollector]:
    inv, _ = load_inventory(LAB_INVENTORY, home=tmp_path)
    return from_inventory(inv, tmp_path)  # type: ignore[return-value]


def test_each_municipality_is_probed_from_its_lan_host_through_its_two_firewalls(tmp_path: Path) -> None:
    found = _collectors(tmp_path)
    assert sorted((c.kinds[0], c.source_id) for c in found) == sorted(
        (k, m) for k in ("network.path", "network.traffic") for m in ("torsby", "sunne", "hagfors"))
    sunne = next(c for c in found if c.source_id == "sunne" and isinstance(c, TrafficCollector))
    assert sorted(sunne.targets) == ["sunne-fw1", "sunne-fw2", "sunne/lan"]
    assert sunne.targets["sunne/lan"].connection.address == "10.0.9.102"
    assert sunne.target["host"] == "10.0.10.2" and sunne.target["label"] == "torsby/dc"
    assert sunne.target["flow"]["port"] == 443 and sunne.undeclared_port == 5432


def test_a_gateway_is_known_as_the_firewall_owning_that_link_address(tmp_path: Path) -> None:
    torsby = next(c for c in _collectors(tmp_path) if c.source_id == "torsby")
    owners = _link_owners(torsby.fws.values())
    assert owners["10.1.1.1"]["id"] == "torsby-fw1"  # the LAN's gateway: fw1's inside address
    assert owners["10.1.2.2"]["id"] == "torsby-fw2"  # fw1's next hop: fw2's inside address
    assert "10.1.3.1" not in owners  # the core router is no machine of the inventory


def test_a_machine_without_an_ssh_connection_is_an_error_naming_it(tmp_path: Path) -> None:
    chosen = [c for c in _collectors(tmp_path) if c.source_id == "hagfors"]
    for c in chosen:
        c.targets = {k: t for k, t in c.targets.items() if k != "hagfors/lan"}
    evidence = run_collectors(chosen, clock=lambda: AT)
    assert len(evidence) == 2
    for ev in evidence:
        assert ev.error is not None and "hagfors/lan has no ssh connection" in ev.error


def test_a_firewall_without_a_connection_is_an_error_for_its_rules_and_its_ips(tmp_path: Path) -> None:
    from audit.collectors import nftables, suricata

    inv, _ = load_inventory(LAB_INVENTORY, home=tmp_path)
    fws = [fw.model_copy(update={"connection": None}) if fw.id == "sunne-fw2" else fw
           for fw in inv.firewalls]
    inv = inv.model_copy(update={"firewalls": fws})
    unconnected = [c for mod in (nftables, suricata) for c in mod.from_inventory(inv, tmp_path)
                   if c.source_id == "sunne-fw2"]
    evidence = run_collectors(unconnected, clock=lambda: AT)
    assert sorted(ev.kind for ev in evidence) == ["nftables.ruleset", "suricata.ips"]
    for ev in evidence:  # never observed on this machine instead
        assert ev.target == "sunne-fw2" and ev.error is not None
        assert "firewall sunne-fw2 has no connection" in ev.error
