"""Traffic proof per municipality, collected as evidence: real packets from the municipality's
LAN probe host towards the classified host, everything over SSH.

``network.path``: the hops a packet from the LAN takes to the classified host, followed route by
route (``ip -j route get``) on each machine Skydd reaches: from the LAN probe host to the
gateway, which the network plan names as a firewall's link address, then on that firewall, until
the destination is on a link of the last hop or the next gateway is a router outside the
inventory (recorded by its address). Each firewall hop carries its forward base chains.

``network.traffic``: a declared flow reaches the classified host; an undeclared port is
blocked; with fw1 opened completely the undeclared port is still blocked (by fw2), and with fw2
opened it is blocked by fw1; a request carrying the IPS test signature is blocked and shows in
fw2's eve.json; with Suricata stopped on fw2 the declared fail mode holds. The probes run on the
LAN probe host; the firewalls are opened and restored, Suricata stopped and started again with
its own command line, each over SSH on the firewall concerned under that firewall's lock
(``host_lock``), and always put back, also on error.

Every machine involved needs an ssh ``connection`` (the LAN segment's and each firewall's); one
that lacks it or cannot be reached makes the municipality's evidence an ``error`` naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from audit.remote import CommandFailed, HostError, Session, Target, run_sync
from audit.remote.ssh import session

from .interface import Collector, CollectorError, Observation
from .nftables import firewall_lock_key, host_lock, parse_ruleset, plans
from .suricata import PIDS_SCRIPT, ips_dir, parse_config, parse_pids, parse_queues

PROBE_TAG = "skydd-probe-open"
IPS_TEST_SNI = "ips-probe.skydd.invalid"  # the shipped ruleset's test signature (sid 9100001)
BLOCK_TIMEOUT = 2.0  # a connection that does not complete within this is blocked
MAX_HOPS = 8

_PROBE = r"""
import json, socket, ssl, sys
host, port, timeout, sni = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
out = {"host": host, "port": port}
try:
    s = socket.create_connection((host, port), timeout)
    out["connected"] = True
    if sni:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # a probe that never trusts: it only sees if TLS gets through
        t = ctx.wrap_socket(s, server_hostname=sni)
        t.sendall(b"GET / HTTP/1.0\r\nHost: " + sni.encode() + b"\r\n\r\n")
        out["answer"] = t.recv(64).decode("latin-1")
    out["reached"] = True
except ConnectionRefusedError:
    out.update(connected=False, reached=True, refused=True)  # a reset came back: not filtered
except (socket.timeout, TimeoutError, ssl.SSLError, OSError) as err:
    out.setdefault("connected", False)
    out.update(reached=False, error=type(err).__name__)
print(json.dumps(out))
"""


async def probe(lan: Session, host: str, port: int, sni: str = "",
                timeout: float = BLOCK_TIMEOUT) -> dict[str, Any]:
    """Connect from the LAN probe host; ``reached`` is False when the packets were dropped."""
    r = await lan.run(["python3", "-c", _PROBE, host, str(port), str(timeout), sni],
                      check=False, timeout=timeout * 3 + 10)
    try:
        result: dict[str, Any] = json.loads(r.text)
    except json.JSONDecodeError as err:
        raise CollectorError(f"{lan.target.label}: the probe to {host}:{port} gave no answer "
                             f"(exit {r.exit_status}): {r.stderr.decode('utf-8', 'replace')[-200:]}"
                             ) from err
    return result


# -- opening a firewall for the independence test -----------------------------------------------

def _forward_chains(nft: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """Base chains on the forward hook that the firewall role owns (not iptables-nft's)."""
    out = []
    for item in nft:
        c = item.get("chain")
        if c and c.get("hook") == "forward" and not (c["family"] in ("ip", "ip6")
                                                     and c["table"] in ("filter", "mangle")):
            out.append((c["family"], c["table"], c["name"]))
    return out


async def _ruleset(fw: Session, *flags: str) -> list[dict[str, Any]]:
    return parse_ruleset((await fw.run(["nft", "-j", *flags, "list", "ruleset"])).text)


async def open_firewall(fw: Session) -> int:
    """Accept everything first in every forward chain; returns how many rules were inserted."""
    chains = _forward_chains(await _ruleset(fw))
    if chains:
        await fw.run_many([["nft", "insert", "rule", family, table, chain, "counter", "accept",
                            "comment", f'"{PROBE_TAG}"'] for family, table, chain in chains])
    return len(chains)


async def restore_firewall(fw: Session) -> None:
    """Remove every rule the probe inserted (found by its comment, so a crashed run is healed)."""
    rules = [i["rule"] for i in await _ruleset(fw, "-a")
             if "rule" in i and i["rule"].get("comment") == PROBE_TAG]
    if rules:
        await fw.run_many([["nft", "delete", "rule", r["family"], r["table"], r["chain"],
                            "handle", str(r["handle"])] for r in rules])


# -- the path ---------------------------------------------------------------------------------

async def route_to(s: Session, dst: str) -> dict[str, Any] | None:
    """The host's route to ``dst`` (``ip -j route get``); None when it has none."""
    r = await s.run(["ip", "-j", "route", "get", dst], check=False)
    if r.exit_status != 0:
        return None
    try:
        routes = json.loads(r.text or "[]")
    except json.JSONDecodeError as err:
        raise CollectorError(f"{s.target.label}: ip -j route get {dst}: not JSON: {err}") from err
    return routes[0] if routes else None


def _link_owners(fws: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each firewall link address (without its prefix) → that firewall's plan."""
    return {link["address"].split("/")[0]: p for p in fws
            for link in (p.get("inside"), p.get("outside")) if link}


class _MunicipalityCollector(Collector):
    def __init__(self, municipality: str, fws: list[dict[str, Any]], lan: Any,
                 targets: dict[str, Target], target: dict[str, Any], undeclared_port: int,
                 site: str | None) -> None:
        super().__init__(municipality, site=site, municipality=municipality)
        self.fws = {p["position"]: p for p in fws}
        self.lan, self.target, self.undeclared_port = lan, target, undeclared_port
        self.targets = targets  # host name (the LAN's "site/segment", a firewall's id) → Target

    def _target(self, name: str) -> Target:
        t = self.targets.get(name)
        if t is None:
            raise CollectorError(f"{name} has no ssh connection in the inventory: the traffic "
                                 "proof reaches every machine it uses over SSH")
        return t

    def collect(self) -> Iterable[Observation]:
        try:
            data = run_sync(self._observe())
        except HostError as err:
            raise CollectorError(str(err)) from err
        yield Observation(self.kinds[0], self.source_id, data)

    async def _observe(self) -> dict[str, Any]:
        raise NotImplementedError


class PathCollector(_MunicipalityCollector):
    kinds = ("network.path",)
    timeout = 60.0

    async def _observe(self) -> dict[str, Any]:
        dst = self.target["host"]
        owners = _link_owners(self.fws.values())
        hops: list[dict[str, Any]] = []
        name, reached, ended = self.lan["label"], False, "no route"
        for _ in range(MAX_HOPS):
            fw = next((p for p in self.fws.values() if p["id"] == name), None)
            target = self._target(name)
            async with session(target) as s:
                entry: dict[str, Any] = {"host": name, "address": target.connection.address,
                                         "firewall": fw["id"] if fw else None,
                                         "position": fw["position"] if fw else None}
                if fw:
                    async with host_lock(firewall_lock_key(fw["id"])):
                        chains = [i["chain"] for i in await _ruleset(s) if "chain" in i]
                    entry["forward_chains"] = [
                        {k: c.get(k) for k in ("family", "table", "name", "type", "prio", "policy")}
                        for c in chains if c.get("hook") == "forward"]
                route = await route_to(s, dst)
            hops.append(entry)
            if route is None:
                break
            gateway = route.get("gateway")
            if gateway is None:  # the destination is on one of this hop's links
                hops.append({"host": self.target["label"], "address": dst, "firewall": None,
                             "position": None})
                reached, ended = True, "destination"
                break
            nxt = owners.get(gateway)
            if nxt is None:  # a router outside the inventory, towards the destination
                hops.append({"host": None, "address": gateway, "firewall": None, "position": None})
                reached, ended = True, "router outside the inventory"
                break
            if any(h["host"] == nxt["id"] for h in hops):
                ended = "a routing loop"
                break
            name = nxt["id"]
        return {"municipality": self.source_id, "destination": dst, "reached": reached,
                "traced_to": ended, "hops": hops,
                "firewalls": [{"id": p["id"], "position": p["position"]} for p in self.fws.values()]}


class TrafficCollector(_MunicipalityCollector):
    kinds = ("network.traffic",)
    timeout = 240.0

    async def _observe(self) -> dict[str, Any]:
        if set(self.fws) != {1, 2}:
            raise CollectorError(f"{self.source_id}: needs firewalls at positions 1 and 2")
        host, flow = self.target["host"], self.target["flow"]
        fw_targets = {pos: self._target(p["id"]) for pos, p in self.fws.items()}
        async with contextlib.AsyncExitStack() as stack:
            lan = await stack.enter_async_context(session(self._target(self.lan["label"])))
            fws = {pos: await stack.enter_async_context(session(t)) for pos, t in fw_targets.items()}
            for pos, fw in fws.items():
                async with self._held(pos):
                    await restore_firewall(fw)  # heal what a crashed earlier probe left
            data: dict[str, Any] = {"municipality": self.source_id, "source": self.lan["network"],
                                    "destination": host, "declared_flow": flow["id"]}
            data["declared"] = await probe(lan, host, flow["port"])
            data["undeclared"] = await probe(lan, host, self.undeclared_port)
            for pos in (1, 2):
                async with self._held(pos):
                    try:
                        opened = await open_firewall(fws[pos])
                        result = await probe(lan, host, self.undeclared_port)
                    finally:
                        await restore_firewall(fws[pos])
                data[f"fw{pos}_opened"] = {"chains_opened": opened, **result}
            data["ips_signature"] = await self._signature(lan, fws[2], host, flow["port"])
            async with self._held(2):
                data["ips_stopped"] = await self._fail_mode(lan, fws[2], host, flow["port"])
        return data

    @contextlib.asynccontextmanager
    async def _held(self, pos: int) -> AsyncIterator[None]:
        async with host_lock(firewall_lock_key(self.fws[pos]["id"])):
            yield

    async def _eve(self, fw: Session) -> str | None:
        conf = ips_dir(self.fws[2]) / "suricata.yaml"
        text = await fw.read(str(conf))
        return parse_config(text.decode("utf-8", "replace"), conf)["eve_path"] if text else None

    async def _signature(self, lan: Session, fw: Session, host: str, port: int) -> dict[str, Any]:
        eve = await self._eve(fw)
        start = 0
        if eve:
            size = await fw.run(["stat", "-c", "%s", eve], check=False)
            start = int(size.text.strip()) if size.exit_status == 0 and size.text.strip() else 0
        result = await probe(lan, host, port, sni=IPS_TEST_SNI)
        seen = False
        if eve:
            deadline = time.monotonic() + 15  # eve.json is written asynchronously
            while time.monotonic() < deadline and not seen:
                new = await fw.run(f"tail -c +{start + 1} -- {shlex.quote(eve)} 2>/dev/null",
                                   check=False)
                seen = any(b'"signature_id":9100001' in line and b'"action":"blocked"' in line
                           for line in new.stdout.splitlines())
                if not seen:
                    await asyncio.sleep(0.3)
        return {"sni": IPS_TEST_SNI, "in_eve": seen, **result}

    async def _fail_mode(self, lan: Session, fw: Session, host: str, port: int) -> dict[str, Any]:
        procs = parse_pids((await fw.run(PIDS_SCRIPT, check=False)).text)
        try:
            if procs:
                await fw.run(["kill", "-TERM", *(str(p["pid"]) for p in procs)], check=False)
                await _wait(fw, _no_suricata, 15, "Suricata did not stop")
            result = await probe(lan, host, port)
        finally:
            await _restart(fw, [p["cmdline"] for p in procs])
        return {"suricata_was_running": bool(procs), "declared_fail_mode": self.fws[2]["fail_mode"],
                "observed": "open" if result.get("reached") else "closed", **result}


async def _no_suricata(fw: Session) -> bool:
    return not parse_pids((await fw.run(PIDS_SCRIPT, check=False)).text)


async def _queue_bound(fw: Session) -> bool:
    r = await fw.run(["cat", "/proc/net/netfilter/nfnetlink_queue"], check=False)
    return any(q["queue"] == 0 for q in parse_queues(r.text))


async def _restart(fw: Session, argvs: list[list[str]]) -> None:
    """Start each stopped Suricata again with its own command line, detached from the session
    (its output to /dev/null: the SSH channel must not wait for the daemon)."""
    for argv in argvs:
        if not argv or not await _no_suricata(fw):
            continue
        pidfile = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--pidfile"), None)
        if pidfile:
            await fw.run(["rm", "-f", "--", pidfile], check=False)
        started = await fw.run(["sh", "-c", 'exec "$@" </dev/null >/dev/null 2>&1', "sh", *argv],
                               check=False, timeout=30)
        if started.exit_status != 0:
            raise CommandFailed(fw.target.label, shlex.join(argv), started.exit_status,
                                "Suricata did not start again after the fail-mode probe")
        await _wait(fw, _queue_bound, 30,
                    "Suricata did not bind its queue again after the fail-mode probe")


async def _wait(fw: Session, cond: Any, seconds: float, message: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await cond(fw):
            return
        await asyncio.sleep(0.2)
    raise CollectorError(f"{fw.target.label}: {message}")


def _targets(inventory: Any) -> list[tuple[str, list[dict[str, Any]], dict[str, Any],
                                           dict[str, Target], dict[str, Any], str | None]]:
    from estate.network_plan import classified_segments, inside_segment

    classified = classified_segments(inventory)
    sites = {s.id: s for s in inventory.sites}
    out = []
    for m in inventory.municipalities:
        fws = [p for p in plans(inventory) if p["municipality"] == m.id]
        fw_models = [f for f in inventory.firewalls if f.municipality == m.id]
        if not fws or not classified:
            continue
        first = min(fw_models, key=lambda f: f.position)
        lan = inside_segment(inventory, first)
        if lan is None:
            continue
        lan_site = next((s.id for s in sites.values() if lan in s.segments), first.site)
        label = f"{lan_site}/{lan.name}"
        targets = {f.id: Target(f.id, f.connection) for f in fw_models
                   if f.connection is not None and f.connection.type == "ssh"}
        if lan.connection is not None and lan.connection.type == "ssh":
            targets[label] = Target(label, lan.connection)
        dc = classified[0]
        dc_site = next((s.id for s in sites.values() if dc in s.segments), "")
        flows = [f for p in fws for f in p["flows"] if f["daddr"] == dc.network and not f["inbound"]]
        target = {"host": dc.host, "label": f"{dc_site}/{dc.name}",
                  "flow": flows[0] if flows else {"id": "-", "port": 443}}
        lan_data = {"label": label, "network": lan.network}
        out.append((m.id, fws, lan_data, targets, target, first.site))
    return out


def from_inventory(inventory: Any, home: Path) -> list[Collector]:
    out: list[Collector] = []
    for muni, fws, lan, targets, target, site in _targets(inventory):
        declared_ports = {f["port"] for p in fws for f in p["flows"]}
        undeclared = next(p for p in (5432, 22, 8080, 3389) if p not in declared_ports)
        out.append(PathCollector(muni, fws, lan, targets, target, undeclared, site))
        out.append(TrafficCollector(muni, fws, lan, targets, target, undeclared, site))
    return out
