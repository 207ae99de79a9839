"""The network plan of an inventory: which flows each firewall must allow, its interfaces and
addresses, where the classified segment is. Pure: it reads only the inventory it is given.

The firewall roles, the nftables collector and the lab network all read this one plan, so what
is built, what is enforced and what is judged cannot drift apart. As a script it prints one
firewall's plan as JSON for the playbooks::

    python -m estate.network_plan --inventory PATH [--home DIR] FIREWALL_ID
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from pathlib import Path
from typing import Any

from .errors import InputError
from .inventory import Firewall, Inventory, Segment
from .loader import load_inventory
from .settings import Settings

# The ports a firewall's own management listens on (SSH); only the management network may reach them.
MANAGEMENT_PORTS = (22,)


def network_of(address: str) -> str:
    """``10.1.1.1/24`` → ``10.1.1.0/24``."""
    return str(ipaddress.ip_interface(address).network)


def ip_of(address: str) -> str:
    return str(ipaddress.ip_interface(address).ip)


def segments(inv: Inventory) -> list[tuple[str, Segment]]:
    """Every segment with the id of its site."""
    return [(site.id, seg) for site in inv.sites for seg in site.segments]


def segment(inv: Inventory, name: str, site: str | None = None) -> Segment:
    found = [seg for sid, seg in segments(inv) if seg.name == name and site in (None, sid)]
    if not found:
        where = f" of site {site}" if site else ""
        raise InputError(f"inventory has no segment {name!r}{where}")
    return found[0]


def inside_segment(inv: Inventory, fw: Firewall) -> Segment | None:
    """The segment behind a firewall's inside link (its municipality's LAN)."""
    if fw.inside is None:
        return None
    net = ipaddress.ip_interface(fw.inside.address).network
    for sid, seg in segments(inv):
        if sid == fw.site and ipaddress.ip_network(seg.network) == net:
            return seg
    # fw2's inside is the transfer net to fw1: the LAN is the site's segment behind fw1.
    peers = [f for f in inv.firewalls if f.municipality == fw.municipality and f.position == 1]
    return inside_segment(inv, peers[0]) if peers and peers[0] is not fw else None


def classified_segments(inv: Inventory) -> list[Segment]:
    return [seg for _, seg in segments(inv) if seg.classified]


def flows_through(inv: Inventory, fw: Firewall) -> list[dict[str, Any]]:
    """The declared flows that cross ``fw``: those from or to the LAN behind it."""
    lan = inside_segment(inv, fw)
    if lan is None:
        return []
    out = []
    for flow in inv.flows:
        if lan.name not in (flow.source, flow.destination):
            continue
        src = lan if flow.source == lan.name else segment(inv, flow.source)
        dst = lan if flow.destination == lan.name else segment(inv, flow.destination)
        out.append({"id": flow.id, "saddr": src.network, "daddr": dst.network,
                    "protocol": flow.protocol, "port": flow.port,
                    "inbound": flow.destination == lan.name})
    return out


def firewall_plan(inv: Inventory, fw: Firewall) -> dict[str, Any]:
    """Everything a firewall's roles and its audit need, as plain data."""
    lan = inside_segment(inv, fw)
    classified = classified_segments(inv)
    return {
        "id": fw.id,
        "municipality": fw.municipality,
        "site": fw.site,
        "position": fw.position,
        # Each firewall gets its own table name: the rule sets are built and judged apart.
        "table": f"skydd_fw{fw.position}",
        "ips": fw.ips,
        "fail_mode": fw.fail_mode,
        "management_network": fw.management_network,
        "management_ports": list(MANAGEMENT_PORTS),
        "inside": fw.inside.model_dump() if fw.inside else None,
        "outside": fw.outside.model_dump() if fw.outside else None,
        "lan": lan.network if lan else None,
        "protects_classified": bool(classified),
        "classified": [seg.network for seg in classified],
        "flows": flows_through(inv, fw),
        "state_dir": fw.state_dir,
    }


def firewall(inv: Inventory, fw_id: str) -> Firewall:
    for fw in inv.firewalls:
        if fw.id == fw_id:
            return fw
    raise InputError(f"no firewall {fw_id!r} in the inventory "
                     f"({', '.join(f.id for f in inv.firewalls) or 'none'})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m estate.network_plan")
    parser.add_argument("--inventory", type=Path, required=True)
    parser.add_argument("--home", type=Path, default=None, help="default: $SKYDD_HOME")
    parser.add_argument("firewall")
    args = parser.parse_args(argv)
    try:
        home = args.home.resolve() if args.home else Settings.from_env().home
        inv, _ = load_inventory(args.inventory, home=home)
        print(json.dumps(firewall_plan(inv, firewall(inv, args.firewall)), sort_keys=True))
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
