"""The lab's management network: how the controller (Skydd, in the root namespace) reaches the
machines the lab plays, and nothing else.

One namespace, ``skydd-mgmt``, sits between the controller and the hosts::

    root ns  skydd-mgmt (10.0.8.1/30) ── up0 (10.0.8.2/30)  skydd-mgmt
                                          h-tor-fw1 (10.1.9.1 peer 10.1.9.11) ── mgmt0 10.1.9.11/24  skydd-tor-fw1
                                          h-dc      (10.0.9.1 peer 10.0.9.10) ── mgmt0 10.0.9.10/24  skydd-dc
                                          ...

The root namespace routes each management network to ``skydd-mgmt``; ``skydd-mgmt`` forwards
only new connections from ``up0`` to a host link and masquerades them to its own address on
that host's management network, so a firewall sees the controller coming from inside its
declared ``management_network`` (the level-b management rule then governs Skydd itself). It
forwards nothing between host links and accepts no new connection from them, and each host
has forwarding off on ``mgmt0``, so the management network is no bypass of the data path.

A host's management address is its inventory ``connection.address`` when it has one, else the
lab's default: a firewall gets ``.10 + position`` in its management network, a LAN probe host
``10.0.9.(100 + municipality number)``, any other segment host ``10.0.9.<third octet of its
segment>`` (dc 10.0.10.0/24 → 10.0.9.10, site4 10.0.40.0/24 → 10.0.9.40).
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

from estate.network_plan import inside_segment, segments

from .errors import LabError

if TYPE_CHECKING:
    from estate.inventory import Inventory

PREFIX = "skydd-"
MGMT_NS = "skydd-mgmt"
UPLINK = "skydd-mgmt"  # the link's name in the root namespace
UPLINK_INNER = "up0"  # and in skydd-mgmt
CONTROLLER_ADDRESS = "10.0.8.1"
UPLINK_ADDRESS = "10.0.8.2"
UPLINK_PREFIX = 30
HOST_NETWORK = "10.0.9.0/24"  # management network of the segment hosts (dc, site4, LANs)
HOST_IFACE = "mgmt0"
TABLE = "skydd_mgmt"

# The machines the lab plays, by inventory name (a firewall's id, a segment's "site/name") → the
# network namespace that plays it. Only the lab knows these: the inventory names machines and
# how to reach them, never where the lab keeps them. A name not listed here (an inventory the lab
# is built from other than its own) gets ``skydd-<name>`` with "/" as "-".
LAB_NAMESPACES = {
    "torsby-fw1": "skydd-tor-fw1", "torsby-fw2": "skydd-tor-fw2",
    "sunne-fw1": "skydd-sun-fw1", "sunne-fw2": "skydd-sun-fw2",
    "hagfors-fw1": "skydd-hag-fw1", "hagfors-fw2": "skydd-hag-fw2",
    "torsby/lan": "skydd-tor-lan", "sunne/lan": "skydd-sun-lan", "hagfors/lan": "skydd-hag-lan",
    "torsby/dc": "skydd-dc", "site4/site4": "skydd-s4",
}


def namespace_of(name: str) -> str:
    """The namespace that plays the machine ``name`` (a firewall id or "site/segment")."""
    return LAB_NAMESPACES.get(name) or PREFIX + re.sub(r"[^a-z0-9-]", "-", name.lower())


def run(*cmd: str, check: bool = True, timeout: float = 30,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a lab tool; a failure is a ``LabError`` with the tool's own message."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              input=stdin if stdin is not None else "")
    except FileNotFoundError as err:
        raise LabError(f"{cmd[0]} is missing: install iproute2 and nftables (make deps)") from err
    except subprocess.TimeoutExpired as err:
        raise LabError(f"{' '.join(cmd)}: no answer within {timeout:.0f} s") from err
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: {(proc.stderr or proc.stdout).strip()}")
    return proc


@dataclass(frozen=True)
class ManagedHost:
    """One machine the lab plays, as the controller sees it."""

    name: str  # the firewall id, or the segment's site/name
    kind: str  # "firewall" or "host"
    namespace: str
    address: str  # its management address
    network: str  # the management network it sits in (CIDR)

    @property
    def gateway(self) -> str:
        """skydd-mgmt's address on this host's management network (the first one)."""
        return str(next(ipaddress.ip_network(self.network).hosts()))

    @property
    def link(self) -> str:
        """The name of the host's link inside skydd-mgmt."""
        return ("h-" + self.namespace.removeprefix(PREFIX))[:15]


def _connection_address(obj: object) -> str | None:
    conn = getattr(obj, "connection", None)  # the inventory's connection block, when present
    if conn is None or getattr(conn, "type", "ssh") != "ssh":
        return None
    return getattr(conn, "address", None)


def managed_hosts(inv: Inventory) -> list[ManagedHost]:
    """Every namespace that plays a machine, with its management address; a plan that would not
    work (an address outside its network, the network's gateway address, a duplicate) is a
    ``LabError`` naming the host."""
    hosts: list[ManagedHost] = []
    number = {m.id: i for i, m in enumerate(inv.municipalities, start=1)}
    for fw in sorted(inv.firewalls, key=lambda f: f.id):
        if fw.management_network is None:
            raise LabError(f"firewall {fw.id}: the lab needs its management_network")
        net = ipaddress.ip_network(fw.management_network)
        address = _connection_address(fw) or str(net.network_address + 10 + fw.position)
        hosts.append(ManagedHost(fw.id, "firewall", namespace_of(fw.id), address, str(net)))
    lans = {seg.network: fw.municipality for fw in inv.firewalls
            if fw.position == 1 and (seg := inside_segment(inv, fw)) is not None}
    base = ipaddress.ip_network(HOST_NETWORK).network_address
    for site, seg in segments(inv):
        if seg.network in lans:
            default = base + 100 + number.get(lans[seg.network], 0)
        else:
            default = base + ipaddress.ip_network(seg.network).network_address.packed[2]
        name = f"{site}/{seg.name}"
        hosts.append(ManagedHost(name, "host", namespace_of(name),
                                 _connection_address(seg) or str(default), HOST_NETWORK))
    _check(hosts)
    return hosts


def _check(hosts: list[ManagedHost]) -> None:
    seen: dict[str, str] = {}
    for h in hosts:
        ip = ipaddress.ip_address(h.address)
        net = ipaddress.ip_network(h.network)
        if ip not in net or ip in (net.network_address, net.broadcast_address):
            raise LabError(f"{h.name}: management address {h.address} is not a host address "
                           f"of its management network {h.network}")
        if h.address == h.gateway:
            raise LabError(f"{h.name}: management address {h.address} is the management "
                           f"namespace's own address on {h.network}; choose another")
        if h.address in seen:
            raise LabError(f"{h.name}: management address {h.address} is also {seen[h.address]}'s")
        seen[h.address] = h.name


def networks(hosts: list[ManagedHost]) -> list[str]:
    return sorted({h.network for h in hosts})


def ruleset(hosts: list[ManagedHost]) -> str:
    """skydd-mgmt's nftables: the controller may open connections to the hosts (masqueraded to
    the management address on the host's network); hosts may open nothing, and nothing is
    forwarded between host links."""
    links = ", ".join(f'"{h.link}"' for h in hosts)
    return f"""table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
	chain input {{
		type filter hook input priority filter; policy drop;
		iif "lo" accept
		ct state established,related accept
		iifname "{UPLINK_INNER}" accept comment "the controller"
	}}
	chain forward {{
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		iifname "{UPLINK_INNER}" oifname {{ {links} }} ct state new accept comment "controller to host"
		counter comment "no host-to-host or host-to-controller forwarding"
	}}
	chain postrouting {{
		type nat hook postrouting priority srcnat; policy accept;
		iifname "{UPLINK_INNER}" oifname {{ {links} }} masquerade
	}}
}}
"""


def build(hosts: list[ManagedHost]) -> None:
    """Create skydd-mgmt, its uplink from the root namespace and one link per host."""
    run("ip", "netns", "add", MGMT_NS)
    run("ip", "-n", MGMT_NS, "link", "set", "lo", "up")
    run("ip", "link", "add", UPLINK, "type", "veth", "peer", "name", UPLINK_INNER,
        "netns", MGMT_NS)
    run("ip", "addr", "add", f"{CONTROLLER_ADDRESS}/{UPLINK_PREFIX}", "dev", UPLINK)
    run("ip", "link", "set", UPLINK, "up")
    run("ip", "-n", MGMT_NS, "addr", "add", f"{UPLINK_ADDRESS}/{UPLINK_PREFIX}",
        "dev", UPLINK_INNER)
    run("ip", "-n", MGMT_NS, "link", "set", UPLINK_INNER, "up")
    for h in hosts:
        prefix = ipaddress.ip_network(h.network).prefixlen
        run("ip", "link", "add", h.link, "netns", MGMT_NS, "type", "veth", "peer", "name",
            HOST_IFACE, "netns", h.namespace)
        run("ip", "-n", MGMT_NS, "addr", "add", h.gateway, "peer", f"{h.address}/32",
            "dev", h.link)
        run("ip", "-n", MGMT_NS, "link", "set", h.link, "up")
        run("ip", "-n", h.namespace, "addr", "add", f"{h.address}/{prefix}", "dev", HOST_IFACE)
        run("ip", "-n", h.namespace, "link", "set", HOST_IFACE, "up")
        # Nothing that arrives on the management link is routed on (set after ip_forward,
        # which resets every interface's flag when written).
        run("ip", "netns", "exec", h.namespace, "sysctl", "-qw",
            f"net.ipv4.conf.{HOST_IFACE}.forwarding=0")
    run("ip", "netns", "exec", MGMT_NS, "nft", "-f", "-", stdin=ruleset(hosts))
    run("ip", "netns", "exec", MGMT_NS, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    for net in networks(hosts):
        run("ip", "route", "add", net, "via", UPLINK_ADDRESS, "dev", UPLINK)


def remove_uplink() -> None:
    """The root-namespace end of the uplink (its routes go with it); absent is fine."""
    if run("ip", "link", "show", UPLINK, check=False).returncode == 0:
        run("ip", "link", "delete", UPLINK, check=False)
