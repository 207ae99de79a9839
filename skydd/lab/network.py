"""The lab network, following the estate: per municipality ``lan → fw1 → fw2``; Torsby's firewalls
reach Torsby's core router in the joint data centre (``skydd-tor-core``) directly, Sunne's and
Hagfors' each over their own line, and the fourth site hangs off Torsby over its own line. Behind
the core sit the classified segment ``dc`` and the shared Internet edge (``skydd-tor-edge``,
holding a documentation address as the Internet's stand-in), so every municipality's way out
runs through Torsby. The municipality that holds the core is the one whose site has the
classified segment.

Built from the lab inventory (addresses: docs/lab-network.md). As found every firewall forwards
everything and runs no IPS. Every machine (firewalls, dc, site4, LAN hosts) also runs sshd on its
management address, which the controller reaches through ``skydd-mgmt`` (``management.py``,
``ssh.py``). Every namespace is named ``skydd-…``, so ``down`` (and ``up`` after
a crash) removes exactly what the lab made: processes in those namespaces, then the namespaces,
which takes their veth links with them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from estate.inventory import Firewall, Inventory, Link
from estate.network_plan import ip_of, segments

from . import management, ssh
from .errors import LabError
from .management import MGMT_NS, PREFIX, namespace_of
from .management import run as _run
from .service import LabService, Progress

CORE = "skydd-tor-core"  # Torsby's core router, in the joint data centre
EDGE = "skydd-tor-edge"  # the shared Internet edge, behind the core
EDGE_LINK = ("10.0.255.1/30", "10.0.255.2/30")  # core: edge0, edge: core0
INTERNET = "192.0.2.1"  # RFC 5737 TEST-NET-1 on the edge: the Internet's stand-in, never routed


def lab_namespaces() -> list[str]:
    """Every namespace on the machine that the lab owns (by prefix)."""
    out = _run("ip", "-j", "netns", "list", check=False).stdout.strip()
    names = [n["name"] for n in json.loads(out)] if out else []
    return sorted(n for n in names if n.startswith(PREFIX))


def ns_pids(ns: str) -> list[int]:
    out = _run("ip", "netns", "pids", ns, check=False).stdout.split()
    return [int(p) for p in out if p.isdigit()]


def _core_iface(local_name: str, line_of: str, local: bool) -> str:
    """The core's side of a link: ``local_name`` within Torsby, ``line-<municipality or site>``
    for a line from elsewhere."""
    return (local_name if local else f"line-{line_of}")[:15]


def hub(inv: Inventory) -> str:
    """The municipality that holds the joint data centre (the classified segment's site)."""
    found = next((site for site in inv.sites for seg in site.segments if seg.classified), None)
    if found is None or found.municipality is None:
        raise LabError("the lab inventory has no classified segment at a municipality's site")
    return found.municipality


def _wiring(fw: Firewall) -> tuple[str, Link, Link] | None:
    """A firewall's namespace, inside and outside link; None if the lab cannot wire it."""
    if fw.inside is None or fw.outside is None:
        return None
    return namespace_of(fw.id), fw.inside, fw.outside


class Service(LabService):
    name = "network"

    # -- the plan ------------------------------------------------------------------------------

    def expected_namespaces(self, inv: Inventory) -> list[str]:
        names = {CORE, EDGE, MGMT_NS}
        names.update(namespace_of(fw.id) for fw in inv.firewalls)
        names.update(namespace_of(f"{site}/{seg.name}") for site, seg in segments(inv))
        return sorted(names)

    # -- up / down -----------------------------------------------------------------------------

    def up(self, progress: Progress) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab network needs root (network namespaces)")
        for tool in ("ip", "nft"):
            if shutil.which(tool) is None:
                raise LabError(f"{tool} is missing: run 'make deps' (Debian iproute2, nftables)")
        inv = self._inventory()
        leftovers = lab_namespaces()
        if leftovers:
            progress(f"cleaning up {len(leftovers)} namespaces left from an earlier run")
        self._teardown(progress)  # also stale firewall state (rule files, pid files) of a crash
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._build(inv, progress)
            hosts = management.managed_hosts(inv)
            management.build(hosts)
            progress(f"management network: the controller reaches {len(hosts)} hosts "
                     f"through {MGMT_NS} ({', '.join(management.networks(hosts))})")
            ssh.start(self.home, hosts)
            progress(f"sshd on {len(hosts)} management addresses; pinned keys in "
                     f"{ssh.known_hosts(self.home)}")
            self._start_dc(inv, progress)
        except BaseException:
            self._teardown(lambda m: None)
            raise
        self._write_state({"namespaces": self.expected_namespaces(inv)})
        progress("namespaces up; every firewall forwards everything (as found)")

    def _build(self, inv: Inventory, progress: Progress) -> None:
        for ns in self.expected_namespaces(inv):
            if ns == MGMT_NS:
                continue  # built with the management network
            _run("ip", "netns", "add", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        progress(f"{len(self.expected_namespaces(inv)) - 1} namespaces created")
        lans: set[str] = set()
        centre = hub(inv)
        centre_name = next(m.name for m in inv.municipalities if m.id == centre)
        for m in inv.municipalities:
            fws = sorted((f for f in inv.firewalls if f.municipality == m.id), key=lambda f: f.position)
            wired = [w for w in (_wiring(f) for f in fws) if w is not None]
            if len(fws) != 2 or len(wired) != 2:
                raise LabError(f"municipality {m.id}: the lab needs fw1 and fw2 with inside and "
                               "outside links")
            fw1, fw2 = fws
            (fw1_ns, fw1_in, fw1_out), (fw2_ns, fw2_in, fw2_out) = wired
            lan = next((seg for sid, seg in segments(inv) if sid == fw1.site
                        and ipaddress.ip_network(seg.network)
                        == ipaddress.ip_interface(fw1_in.address).network), None)
            if lan is None:
                raise LabError(f"municipality {m.id}: no segment behind {fw1.id}'s inside link")
            lan_ns = namespace_of(f"{fw1.site}/{lan.name}")
            lans.add(lan_ns)
            prefix = ipaddress.ip_network(lan.network).prefixlen
            self._veth(lan_ns, "lan0", f"{lan.host}/{prefix}",
                       fw1_ns, fw1_in.interface, fw1_in.address)
            self._veth(fw1_ns, fw1_out.interface, fw1_out.address,
                       fw2_ns, fw2_in.interface, fw2_in.address)
            core_prefix = ipaddress.ip_interface(fw2_out.address).network.prefixlen
            core_if = _core_iface(f"m-{fw2.id}", m.id, m.id == centre)
            self._veth(fw2_ns, fw2_out.interface, fw2_out.address,
                       CORE, core_if, f"{fw2_out.peer}/{core_prefix}")
            _run("ip", "-n", lan_ns, "route", "add", "default", "via", lan.gateway)
            _run("ip", "-n", fw1_ns, "route", "add", "default", "via", fw1_out.peer)
            _run("ip", "-n", fw2_ns, "route", "add", "default", "via", fw2_out.peer)
            _run("ip", "-n", fw2_ns, "route", "add", lan.network, "via", fw2_in.peer)
            _run("ip", "-n", CORE, "route", "add", lan.network, "via", ip_of(fw2_out.address))
            for ns in (fw1_ns, fw2_ns):
                _run("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            way = f"{centre_name}'s core" if m.id == centre else f"its own line ({core_if}) to the core"
            progress(f"{m.id}: lan → {fw1.id} → {fw2.id} → {way}")
        municipality_of = {site.id: site.municipality for site in inv.sites}
        for site, seg in segments(inv):  # behind the core: dc (Torsby), site4 (over its line)
            ns = namespace_of(f"{site}/{seg.name}")
            if ns in lans:
                continue
            local = municipality_of[site] == centre
            prefix = ipaddress.ip_network(seg.network).prefixlen
            self._veth(ns, "eth0", f"{seg.host}/{prefix}",
                       CORE, _core_iface(f"s-{seg.name}", site, local),
                       f"{seg.gateway}/{prefix}")
            _run("ip", "-n", ns, "route", "add", "default", "via", seg.gateway)
            progress(f"core → {seg.name} ({seg.network})" + ("" if local else " over its own line"))
        # The shared Internet edge is the core's way out; a lab address (10/8) the core has no
        # route for is unreachable there rather than sent out.
        self._veth(CORE, "edge0", EDGE_LINK[0], EDGE, "core0", EDGE_LINK[1])
        _run("ip", "-n", EDGE, "addr", "add", f"{INTERNET}/24", "dev", "lo")
        _run("ip", "-n", EDGE, "route", "add", "10.0.0.0/8", "via", ip_of(EDGE_LINK[0]))
        _run("ip", "-n", CORE, "route", "add", "default", "via", ip_of(EDGE_LINK[1]))
        _run("ip", "-n", CORE, "route", "add", "unreachable", "10.0.0.0/8")
        _run("ip", "netns", "exec", CORE, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        progress(f"{centre_name}'s Internet edge behind the core ({INTERNET} stands in for the Internet)")

    @staticmethod
    def _veth(ns_a: str, if_a: str, addr_a: str, ns_b: str, if_b: str, addr_b: str) -> None:
        _run("ip", "link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b,
             "netns", ns_b)
        for ns, iface, addr in ((ns_a, if_a, addr_a), (ns_b, if_b, addr_b)):
            _run("ip", "-n", ns, "addr", "add", addr, "dev", iface)
            _run("ip", "-n", ns, "link", "set", iface, "up")

    # -- the classified segment's stand-in services ----------------------------------------------

    def dc_dir(self) -> Path:
        return self.state_dir / "dc"

    def _start_dc(self, inv: Inventory, progress: Progress) -> None:
        found = next(((site, seg) for site, seg in segments(inv) if seg.classified), None)
        if found is None:
            raise LabError("the lab inventory has no classified segment")
        dc_ns, dc = namespace_of(f"{found[0]}/{found[1].name}"), found[1]
        cert, key = _lab_cert(self.dc_dir(), dc.host)
        # A real database in the dc (the postgres lab service) takes the database port.
        db_port = 0 if any(s.primary_db and s.primary_db.host == dc.host for s in inv.systems) else 5432
        with open(self.dc_dir() / "standin.log", "ab") as log:  # the child keeps its own copy
            proc = subprocess.Popen(
                ["ip", "netns", "exec", dc_ns, sys.executable, "-m",
                 "skydd.lab.network_dc", "--bind", dc.host, "--cert", str(cert), "--key",
                 str(key), "--db-port", str(db_port)],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        (self.dc_dir() / "standin.pid").write_text(str(proc.pid))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise LabError(f"the dc stand-in exited: see {self.dc_dir() / 'standin.log'}")
            ready = _run("ip", "netns", "exec", dc_ns, "ss", "-Hltn", check=False).stdout
            if f"{dc.host}:443" in ready and (not db_port or f"{dc.host}:5432" in ready):
                progress(f"dc stand-in serving https://{dc.host}:443 and tcp/5432")
                return
            time.sleep(0.1)
        raise LabError("the dc stand-in did not listen within 15 s")

    def down(self, progress: Progress) -> None:
        self._teardown(progress)

    def _teardown(self, progress: Progress) -> None:
        stopped = ssh.stop(self.home)
        if stopped:
            progress(f"stopped {stopped} sshd")
        namespaces = lab_namespaces()
        for ns in namespaces:  # Suricata, stand-ins, probes: everything the lab runs in them
            for pid in ns_pids(ns):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(ns_pids(ns) for ns in namespaces):
            time.sleep(0.1)
        for ns in namespaces:
            for pid in ns_pids(ns):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for ns in namespaces:
            _run("ip", "netns", "delete", ns, check=False)
        management.remove_uplink()
        left = lab_namespaces()
        if left:
            raise LabError(f"could not remove namespaces: {', '.join(left)}")
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir, ignore_errors=True)
        if namespaces:
            progress(f"removed {len(namespaces)} namespaces and their links and processes")

    # -- status --------------------------------------------------------------------------------

    def _write_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_dir / ".state.json.tmp"
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_dir / "state.json")

    def status(self) -> dict[str, Any]:
        try:
            inv = self._inventory()
            expected = self.expected_namespaces(inv)
            dc = next((seg for _, seg in segments(inv) if seg.classified), None)
            hosts = management.managed_hosts(inv)
        except Exception as err:  # status never raises
            return {"state": "down", "endpoint": None, "error": str(err)}
        present = lab_namespaces()
        up = set(expected) <= set(present) and (self.state_dir / "state.json").exists()
        return {"state": "up" if up else "down",
                "endpoint": f"https://{dc.host}:443" if dc else None,
                "namespaces": present, "expected": expected,
                "firewalls": {fw.id: namespace_of(fw.id) for fw in inv.firewalls},
                "ssh": ssh.status(self.home, hosts) if up else None,
                "management": {"namespace": MGMT_NS,
                               "controller": management.CONTROLLER_ADDRESS,
                               "networks": management.networks(hosts)}}


def _lab_cert(folder: Path, host: str) -> tuple[Path, Path]:
    """A self-signed certificate for the stand-in (also its own CA for the probes)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "socialcare.pem", folder / "socialcare.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "socialcare.lab")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("socialcare.lab"), x509.IPAddress(ipaddress.ip_address(host))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
