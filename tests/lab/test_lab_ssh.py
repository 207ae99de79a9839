"""The lab's network and machines. Sunne and Hagfors reach Torsby's core over their own lines,
the fourth site hangs off Torsby, and the Internet edge is behind Torsby's core. Every namespace
that plays a machine runs a real sshd on its management address only, and the controller (this
process, in the root namespace) reaches each one through ``skydd-mgmt`` with the Debian ``ssh``
client, pinned host keys and key login only. The management network is no bypass of the data
path, the level-b management rule still lets the controller in, and ``lab down`` leaves no sshd,
namespace or route behind.

Traffic stays inside the lab: nothing here connects to a data-path address from the root
namespace (whose default route leaves the machine)."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

SKYDD = str(Path(sys.executable).parent / "skydd")
PROBE = """
import socket, sys
s = socket.socket()
s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("open")
except ConnectionRefusedError:
    print("refused")
except OSError as err:
    print("blocked", err)
"""


@pytest.fixture(scope="module")
def lab(lab_home: Path) -> Iterator[Any]:
    from skydd.lab import network

    svc = network.Service(lab_home)
    svc.up(lambda msg: print(f"lab network: {msg}"))
    try:
        yield svc
    finally:
        svc.down(lambda msg: None)


def ssh(home: Path, address: str, command: str, *options: str,
        known_hosts: Path | None = None) -> subprocess.CompletedProcess[str]:
    folder = home / "lab" / "ssh"
    return subprocess.run(
        ["ssh", "-i", str(folder / "id_ed25519"),
         "-o", f"UserKnownHostsFile={known_hosts or folder / 'known_hosts'}",
         "-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null",
         "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-F", "/dev/null", *options,
         f"root@{address}", command],
        capture_output=True, text=True, timeout=30)


def probe(ns: str, address: str, port: int, timeout: float = 2) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", PROBE, address,
                           str(port), str(timeout)],
                          capture_output=True, text=True, timeout=30).stdout.strip()


def hosts(home: Path) -> dict[str, dict[str, Any]]:
    env = {**os.environ, "SKYDD_HOME": str(home)}
    out = subprocess.run([SKYDD, "lab", "status", "--format", "json"], capture_output=True,
                         text=True, env=env, timeout=60).stdout
    net = json.loads(out)["services"]["network"]
    assert net["state"] == "up", net
    assert net["ssh"]["up"] == net["ssh"]["expected"] == len(net["ssh"]["hosts"]), net["ssh"]
    return net["ssh"]["hosts"]


def sshd_pids(home: Path) -> set[int]:
    """Every running sshd started from the lab's folders (zombies have no cmdline)."""
    marker = str(home / "lab" / "ssh").encode()
    found = set()
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if marker in (p / "cmdline").read_bytes():
                    found.add(int(p.name))
            except OSError:
                pass
    return found


def test_the_controller_reaches_every_host_over_ssh_with_a_pinned_key(lab: Any) -> None:
    home = lab.home
    found = hosts(home)
    # six firewalls, dc, site4 and the three LAN hosts
    assert len(found) == 11
    assert {h["namespace"] for h in found.values()} >= {
        "skydd-tor-fw1", "skydd-tor-fw2", "skydd-sun-fw1", "skydd-sun-fw2", "skydd-hag-fw1",
        "skydd-hag-fw2", "skydd-dc", "skydd-s4", "skydd-tor-lan", "skydd-sun-lan", "skydd-hag-lan"}
    key = home / "lab" / "ssh" / "id_ed25519"
    assert key.stat().st_mode & 0o777 == 0o600
    pinned = (home / "lab" / "ssh" / "known_hosts").read_text().splitlines()
    assert sorted(line.split()[0] for line in pinned) == sorted(h["address"] for h in found.values())
    assert all(line.split()[1] == "ssh-ed25519" for line in pinned)

    inv = lab._inventory()
    mgmt = {fw.id: ipaddress.ip_network(fw.management_network) for fw in inv.firewalls}

    def login(item: tuple[str, dict[str, Any]]) -> tuple[str, int, str, str]:
        name, h = item
        r = ssh(home, h["address"], 'ip netns identify; echo "$SSH_CLIENT"')
        return name, r.returncode, r.stdout, r.stderr

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(login, found.items()))
    for name, rc, out, err in results:
        assert rc == 0, f"{name}: {err}"
        ns, client = out.splitlines()
        assert ns == found[name]["namespace"], (name, out)
        if name in mgmt:  # a firewall sees the controller inside its declared management network
            assert ipaddress.ip_address(client.split()[0]) in mgmt[name], (name, client)


def test_only_keys_and_only_pinned_hosts_get_in(lab: Any, tmp_path: Path) -> None:
    home = lab.home
    found = hosts(home)
    fw = found["sunne-fw2"]["address"]
    r = ssh(home, fw, "true", "-o", "PubkeyAuthentication=no",
            "-o", "PreferredAuthentications=password,keyboard-interactive")
    assert r.returncode == 255 and "Permission denied (publickey)" in r.stderr, r.stderr
    # A host whose key is not pinned is refused before any login.
    other = tmp_path / "known_hosts"
    other.write_text("".join(line + "\n" for line in
                             (home / "lab" / "ssh" / "known_hosts").read_text().splitlines()
                             if not line.startswith(fw + " ")))
    r = ssh(home, fw, "true", known_hosts=other)
    assert r.returncode == 255 and "Host key verification failed" in r.stderr, r.stderr


def test_sshd_listens_on_the_management_address_only(lab: Any) -> None:
    found = hosts(lab.home)
    for name, h in found.items():
        listening = subprocess.run(["ip", "netns", "exec", h["namespace"], "ss", "-Hltn",
                                    "sport", "= :22"], capture_output=True, text=True,
                                   check=True).stdout.split()
        assert [a for a in listening if a.endswith(":22")] == [f"{h['address']}:22"], name
    # From the LAN, port 22 on its firewall's data-path address is closed.
    assert probe("skydd-tor-lan", "10.1.1.1", 22) == "refused"
    assert probe("skydd-hag-lan", "10.3.1.1", 22) == "refused"


def test_the_management_network_is_no_bypass_of_the_data_path(lab: Any) -> None:
    found = hosts(lab.home)
    tor_fw1, tor_fw2 = found["torsby-fw1"]["address"], found["torsby-fw2"]["address"]
    dc, s4 = found["torsby/dc"]["address"], found["site4/site4"]["address"]
    # No host reaches another host's management address, nor skydd-mgmt itself.
    assert probe("skydd-tor-lan", tor_fw2, 22).startswith("blocked")
    assert probe("skydd-tor-lan", dc, 22).startswith("blocked")
    assert probe("skydd-dc", s4, 22).startswith("blocked")
    assert probe("skydd-dc", "10.0.9.1", 22).startswith("blocked")

    # skydd-mgmt drops what a host sends towards another host's link (counted), even when the
    # host routes it there.
    def dropped() -> int:
        out = subprocess.run(["ip", "netns", "exec", "skydd-mgmt", "nft", "list", "chain",
                              "inet", "skydd_mgmt", "forward"], capture_output=True, text=True,
                             check=True).stdout
        return int(re.search(r"counter packets (\d+)", out).group(1))  # type: ignore[union-attr]

    before = dropped()
    subprocess.run(["ip", "-n", "skydd-dc", "route", "add", f"{tor_fw1}/32", "via", "10.0.9.1"],
                   check=True)
    try:
        assert probe("skydd-dc", tor_fw1, 22, timeout=1).startswith("blocked")
    finally:
        subprocess.run(["ip", "-n", "skydd-dc", "route", "del", f"{tor_fw1}/32"], check=True)
    assert dropped() > before

    # A firewall does not route what arrives on its management link: with a route through
    # torsby-fw1's management address, skydd-mgmt cannot reach the Torsby LAN host (whose
    # replies would come back), and it can as soon as fw1 forwards from mgmt0.
    listener = subprocess.Popen(
        ["ip", "netns", "exec", "skydd-tor-lan", sys.executable, "-c",
         "import socket,time\ns=socket.socket()\ns.bind(('10.1.1.2',8099))\ns.listen()\n"
         "time.sleep(60)"])
    subprocess.run(["ip", "-n", "skydd-mgmt", "route", "add", "10.1.1.0/24", "via", tor_fw1],
                   check=True)
    try:
        for _ in range(50):  # the listener is there
            if probe("skydd-tor-lan", "10.1.1.2", 8099) == "open":
                break
        else:
            pytest.fail("the listener in skydd-tor-lan did not come up")
        assert probe("skydd-mgmt", "10.1.1.2", 8099, timeout=1).startswith("blocked")
        sysctl = ["ip", "netns", "exec", "skydd-tor-fw1", "sysctl", "-qw"]
        subprocess.run([*sysctl, "net.ipv4.conf.mgmt0.forwarding=1"], check=True)
        try:
            assert probe("skydd-mgmt", "10.1.1.2", 8099) == "open"  # so the flag is what stops it
        finally:
            subprocess.run([*sysctl, "net.ipv4.conf.mgmt0.forwarding=0"], check=True)
    finally:
        subprocess.run(["ip", "-n", "skydd-mgmt", "route", "del", "10.1.1.0/24"], check=True)
        listener.kill()
        listener.wait()


def data_addresses() -> dict[str, tuple[str, str]]:
    """Every data-path address of the lab: the namespace and interface that hold it."""
    from skydd.lab.network import lab_namespaces

    owner: dict[str, tuple[str, str]] = {}
    for ns in lab_namespaces():
        out = subprocess.run(["ip", "-j", "-n", ns, "addr"], capture_output=True, text=True,
                             check=True).stdout
        for link in json.loads(out):
            for a in link.get("addr_info", []):
                if a["family"] == "inet" and link["ifname"] != "mgmt0" and ns != "skydd-mgmt" \
                        and not a["local"].startswith("127."):
                    owner[a["local"]] = (ns, link["ifname"])
    return owner


def route_hops(owner: dict[str, tuple[str, str]], start: str, destination: str
               ) -> list[tuple[str, str]]:
    """Follow the routing tables from namespace ``start`` towards ``destination``: every
    namespace on the way with the interface the packet arrives on there (``""`` at the start);
    ``owner`` is ``data_addresses()``."""
    hops, ns = [(start, "")], start
    for _ in range(12):
        out = subprocess.run(["ip", "-j", "-n", ns, "route", "get", destination],
                             capture_output=True, text=True, check=True).stdout
        route = json.loads(out)[0]
        if route.get("type") == "local":
            return hops
        hops.append(owner[route.get("gateway", destination)])
        ns = hops[-1][0]
        if "gateway" not in route:
            return hops
    pytest.fail(f"no end to the route from {start} to {destination}: {hops}")


def test_sunne_and_hagfors_reach_torsby_over_their_own_lines(lab: Any) -> None:
    """The seed's network: Torsby's core in the joint data centre, Sunne and Hagfors each on a
    line of its own to it, the fourth site on its own line from Torsby, and the one Internet edge
    behind Torsby's core."""
    from skydd.lab.network import CORE, EDGE, INTERNET

    dc, site4 = "10.0.10.2", "10.0.40.2"
    owner = data_addresses()
    lans = {"tor": "m-torsby-fw2", "sun": "line-sunne", "hag": "line-hagfors"}
    for short, arrives in lans.items():
        way = [f"skydd-{short}-lan", f"skydd-{short}-fw1", f"skydd-{short}-fw2", CORE]
        hops = route_hops(owner, f"skydd-{short}-lan", dc)
        assert hops == [*((n, i) for n, i in zip(way, ("", "in0", "in0", arrives), strict=True)),
                        ("skydd-dc", "eth0")], hops
        assert [n for n, _ in route_hops(owner, f"skydd-{short}-lan", INTERNET)] == [*way, EDGE]
    # No line between Sunne and Hagfors: one reaches the other through Torsby.
    assert [n for n, _ in route_hops(owner, "skydd-sun-lan", "10.3.1.2")] == [
        "skydd-sun-lan", "skydd-sun-fw1", "skydd-sun-fw2", CORE, "skydd-hag-fw2",
        "skydd-hag-fw1", "skydd-hag-lan"]
    # The mirror's way: dc → Torsby's core → site4's line; site4's way out is Torsby's edge.
    assert route_hops(owner, "skydd-dc", site4) == [("skydd-dc", ""), (CORE, "s-dc"), ("skydd-s4", "eth0")]
    out = subprocess.run(["ip", "-j", "-n", CORE, "route", "get", site4], capture_output=True,
                         text=True, check=True).stdout
    assert json.loads(out)[0]["dev"] == "line-site4"
    assert [n for n, _ in route_hops(owner, "skydd-s4", INTERNET)] == ["skydd-s4", CORE, EDGE]

    # Real traffic, as found: every LAN reaches the dc and the Internet's stand-in (its edge
    # answers with a reset); cutting Sunne's line cuts Sunne alone.
    for short in lans:
        assert probe(f"skydd-{short}-lan", dc, 443) == "open"
        assert probe(f"skydd-{short}-lan", INTERNET, 443) == "refused"
    saved = json.loads(subprocess.run(["ip", "-j", "-n", CORE, "route", "show", "dev", "line-sunne"],
                                      capture_output=True, text=True, check=True).stdout)
    subprocess.run(["ip", "-n", CORE, "link", "set", "line-sunne", "down"], check=True)
    try:
        for target in (dc, INTERNET):
            assert probe("skydd-sun-lan", target, 443, timeout=1).startswith("blocked")
        assert probe("skydd-tor-lan", dc, 443) == "open"
        assert probe("skydd-hag-lan", dc, 443) == "open"
    finally:
        subprocess.run(["ip", "-n", CORE, "link", "set", "line-sunne", "up"], check=True)
        for r in saved:  # a link set down loses its routes
            if "gateway" in r:
                subprocess.run(["ip", "-n", CORE, "route", "replace", r["dst"], "via",
                                r["gateway"], "dev", "line-sunne"], check=True)
    deadline = time.monotonic() + 15  # neighbours that failed while the line was cut recover
    while probe("skydd-sun-lan", dc, 443, timeout=1) != "open":
        assert time.monotonic() < deadline, "Sunne's LAN did not reach the dc again"
        time.sleep(0.5)


def test_level_b_management_rule_still_lets_the_controller_in(lab: Any) -> None:
    """Load the nftables_firewall role's own templates (all controls on) into Torsby's firewalls:
    the LAN loses tcp/22 on fw1, the controller keeps it on both."""
    import jinja2
    import yaml

    from estate.network_plan import firewall, firewall_plan

    role = REPO / "playbooks" / "roles" / "nftables_firewall"
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(role / "templates"))
    inv = lab._inventory()
    found = hosts(lab.home)
    fw1 = found["torsby-fw1"]["address"]
    assert probe("skydd-tor-lan", fw1, 22) == "open"  # as found: no rule set on the firewall
    for fw_id in ("torsby-fw1", "torsby-fw2"):
        plan = firewall_plan(inv, firewall(inv, fw_id))
        variables = {k: v for k, v in defaults.items() if not isinstance(v, str) or "{{" not in v}
        text = env.get_template(f"fw{plan['position']}.nft.j2").render(
            {**variables, "nftables_firewall_plan": plan})
        subprocess.run(["ip", "netns", "exec", found[fw_id]["namespace"], "nft", "-f", "-"],
                       input=text, text=True, check=True)
    assert probe("skydd-tor-lan", fw1, 22).startswith("blocked")
    for fw_id in ("torsby-fw1", "torsby-fw2"):
        r = ssh(lab.home, found[fw_id]["address"], "nft list tables")
        assert r.returncode == 0, r.stderr
        assert "skydd_fw" in r.stdout


def test_up_after_a_crash_and_down_leave_no_sshd_behind(lab: Any) -> None:
    from skydd.lab.network import lab_namespaces

    home = lab.home
    key = (home / "lab" / "ssh" / "id_ed25519").read_bytes()
    old = sshd_pids(home)
    assert len(old) >= 11
    lab.up(lambda msg: None)  # as after a crash: everything of the earlier run goes first
    new = sshd_pids(home)
    assert not old & new
    assert len(hosts(home)) == 11
    assert (home / "lab" / "ssh" / "id_ed25519").read_bytes() == key  # made once
    r = ssh(home, hosts(home)["torsby/dc"]["address"], "true")
    assert r.returncode == 0, r.stderr

    lab.down(lambda msg: None)
    assert not sshd_pids(home)
    assert not lab_namespaces()
    assert subprocess.run(["ip", "link", "show", "skydd-mgmt"], capture_output=True).returncode != 0
    assert "10.1.9.0/24" not in subprocess.run(["ip", "route"], capture_output=True,
                                               text=True).stdout
    assert sorted(p.name for p in (home / "lab" / "ssh").iterdir()) == [
        "id_ed25519", "id_ed25519.pub"]
    assert lab.status()["state"] == "down"
