"""Traffic proof per municipality, collected as evidence: real packets from the municipality's
LAN towards the classified segment, sent only inside the lab's network namespaces.

``network.path``: the hops a packet from the LAN takes to the classified host (routing tables,
hop by hop) and each hop's forward base chains.

``network.traffic``: a declared flow reaches the classified host; an undeclared port is
blocked; with fw1 opened completely the undeclared port is still blocked (by fw2), and with fw2
opened it is blocked by fw1; a request carrying the IPS test signature is blocked and shows in
eve.json; with Suricata stopped the declared fail mode holds. Every firewall that is opened is
restored, and a stopped Suricata is restarted with its own command line, always — also on error.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .interface import Collector, CollectorError, Observation
from .nftables import firewall_lock_key, in_namespace, ns_lock, plans, ruleset, run
from .suricata import bound_queues, cmdline, ips_dir, read_config, suricata_pids

PROBE_TAG = "skydd-probe-open"
IPS_TEST_SNI = "ips-probe.skydd.invalid"  # the shipped ruleset's test signature (sid 9100001)
BLOCK_TIMEOUT = 2.0  # a connection that does not complete within this is blocked

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


def probe(namespace: str, host: str, port: int, sni: str = "",
          timeout: float = BLOCK_TIMEOUT) -> dict[str, Any]:
    """Connect from inside ``namespace``; ``reached`` is False when the packets were dropped."""
    cmd = in_namespace(namespace, sys.executable, "-c", _PROBE, host, str(port), str(timeout), sni)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout * 3 + 10)
        result: dict[str, Any] = json.loads(proc.stdout)
        return result
    except (subprocess.TimeoutExpired, json.JSONDecodeError) as err:
        raise CollectorError(f"probe from {namespace} to {host}:{port} failed: {err}") from err


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


def open_firewall(namespace: str) -> int:
    """Accept everything first in every forward chain; returns how many rules were inserted."""
    chains = _forward_chains(ruleset(namespace))
    for family, table, chain in chains:
        run(namespace, "nft", "insert", "rule", family, table, chain, "counter", "accept",
            "comment", f'"{PROBE_TAG}"')
    return len(chains)


def restore_firewall(namespace: str) -> None:
    """Remove every rule the probe inserted (found by its comment, so a crashed run is healed)."""
    out = run(namespace, "nft", "-j", "-a", "list", "ruleset").stdout
    for item in json.loads(out or '{"nftables": []}').get("nftables", []):
        r = item.get("rule")
        if r and r.get("comment") == PROBE_TAG:
            run(namespace, "nft", "delete", "rule", r["family"], r["table"], r["chain"],
                "handle", str(r["handle"]))


# -- the path ---------------------------------------------------------------------------------

def _owners() -> dict[str, str]:
    """Address → namespace, over every namespace on the machine."""
    names = json.loads(run(None, "ip", "-j", "netns", "list").stdout or "[]")
    owners = {}
    for n in names:
        addrs = json.loads(run(None, "ip", "-n", n["name"], "-j", "addr").stdout or "[]")
        for link in addrs:
            for a in link.get("addr_info", []):
                owners[a["local"]] = n["name"]
    return owners


def trace(source_ns: str, dst: str, max_hops: int = 8) -> tuple[list[str], bool]:
    owners = _owners()
    hops, ns = [source_ns], source_ns
    for _ in range(max_hops):
        route = json.loads(run(None, "ip", "-n", ns, "-j", "route", "get", dst).stdout or "[{}]")
        gw = route[0].get("gateway") if route else None
        if gw is None:
            return hops, owners.get(dst) is not None
        next_ns = owners.get(gw)
        if next_ns is None or next_ns in hops:
            return [*hops, gw], False
        hops.append(next_ns)
        ns = next_ns
    return hops, False


class _MunicipalityCollector(Collector):
    def __init__(self, municipality: str, fws: list[dict[str, Any]], lan: dict[str, Any],
                 target: dict[str, Any], undeclared_port: int, site: str | None) -> None:
        super().__init__(municipality, site=site, municipality=municipality)
        self.fws = {p["position"]: p for p in fws}
        self.lan, self.target, self.undeclared_port = lan, target, undeclared_port


class PathCollector(_MunicipalityCollector):
    kinds = ("network.path",)
    timeout = 30.0

    def collect(self) -> Iterable[Observation]:
        hops, reached = trace(self.lan["namespace"], self.target["host"])
        by_ns = {p["namespace"]: p for p in self.fws.values()}
        detail = []
        for ns in hops:
            fw = by_ns.get(ns)
            entry: dict[str, Any] = {"namespace": ns, "firewall": fw["id"] if fw else None,
                                     "position": fw["position"] if fw else None}
            if fw:
                with ns_lock(firewall_lock_key(fw["id"])):
                    chains = [i["chain"] for i in ruleset(ns) if "chain" in i]
                entry["forward_chains"] = [
                    {k: c.get(k) for k in ("family", "table", "name", "type", "prio", "policy")}
                    for c in chains if c.get("hook") == "forward"]
            detail.append(entry)
        yield Observation(self.kinds[0], self.source_id, {
            "municipality": self.source_id, "destination": self.target["host"],
            "reached": reached, "hops": detail,
            "firewalls": [{"id": p["id"], "position": p["position"]} for p in self.fws.values()]})


class TrafficCollector(_MunicipalityCollector):
    kinds = ("network.traffic",)
    timeout = 240.0

    def collect(self) -> Iterable[Observation]:
        if set(self.fws) != {1, 2}:
            raise CollectorError(f"{self.source_id}: needs firewalls at positions 1 and 2")
        src, host = self.lan["namespace"], self.target["host"]
        flow = self.target["flow"]
        for p in self.fws.values():
            with ns_lock(firewall_lock_key(p["id"])):
                restore_firewall(p["namespace"])  # heal what a crashed earlier probe left
        data: dict[str, Any] = {"municipality": self.source_id, "source": self.lan["network"],
                                "destination": host, "declared_flow": flow["id"]}
        data["declared"] = probe(src, host, flow["port"])
        data["undeclared"] = probe(src, host, self.undeclared_port)
        for pos in (1, 2):
            ns = self.fws[pos]["namespace"]
            with ns_lock(firewall_lock_key(self.fws[pos]["id"])):
                try:
                    opened = open_firewall(ns)
                    result = probe(src, host, self.undeclared_port)
                finally:
                    restore_firewall(ns)
            data[f"fw{pos}_opened"] = {"chains_opened": opened, **result}
        data["ips_signature"] = self._signature(src, host, flow["port"])
        with ns_lock(firewall_lock_key(self.fws[2]["id"])):
            data["ips_stopped"] = self._fail_mode(src, host, flow["port"])
        yield Observation(self.kinds[0], self.source_id, data)

    def _eve(self) -> Path | None:
        conf = ips_dir(self.fws[2]) / "suricata.yaml"
        return Path(read_config(conf)["eve_path"]) if conf.exists() else None

    def _signature(self, src: str, host: str, port: int) -> dict[str, Any]:
        eve = self._eve()
        start = eve.stat().st_size if eve and eve.exists() else 0
        result = probe(src, host, port, sni=IPS_TEST_SNI)
        seen = False
        if eve and eve.exists():
            deadline = time.monotonic() + 15  # eve.json is written asynchronously
            while time.monotonic() < deadline and not seen:
                with eve.open("rb") as f:
                    f.seek(start)
                    seen = any(b'"signature_id":9100001' in line and b'"action":"blocked"' in line
                               for line in f.read().splitlines())
                time.sleep(0.2)
        return {"sni": IPS_TEST_SNI, "in_eve": seen, **result}

    def _fail_mode(self, src: str, host: str, port: int) -> dict[str, Any]:
        ns = self.fws[2]["namespace"]
        pids = suricata_pids(ns)
        argvs = [cmdline(p) for p in pids]
        try:
            for pid in pids:
                os.kill(pid, signal.SIGTERM)
            _wait(lambda: not suricata_pids(ns), 15, "Suricata did not stop")
            result = probe(src, host, port)
        finally:
            for argv in argvs:
                if argv and not suricata_pids(ns):
                    _restart(ns, argv)
        return {"suricata_was_running": bool(pids), "declared_fail_mode": self.fws[2]["fail_mode"],
                "observed": "open" if result.get("reached") else "closed", **result}


def _restart(ns: str, argv: list[str]) -> None:
    pidfile = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--pidfile"), None)
    if pidfile:
        Path(pidfile).unlink(missing_ok=True)
    subprocess.run(in_namespace(ns, *argv), capture_output=True, timeout=30)
    _wait(lambda: any(q["queue"] == 0 for q in bound_queues(ns)), 30,
          "Suricata did not bind its queue again after the fail-mode probe")


def _wait(cond: Any, seconds: float, message: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise CollectorError(message)


def _targets(inventory: Any) -> list[tuple[str, list[dict[str, Any]], dict[str, Any], dict[str, Any], str | None]]:
    from estate.network_plan import classified_segments, inside_segment

    classified = classified_segments(inventory)
    out = []
    for m in inventory.municipalities:
        fws = [p for p in plans(inventory) if p["municipality"] == m.id]
        fw_models = [f for f in inventory.firewalls if f.municipality == m.id]
        if not fws or not classified:
            continue
        lan = inside_segment(inventory, min(fw_models, key=lambda f: f.position))
        if lan is None or lan.namespace is None:
            continue
        dc = classified[0]
        flows = [f for p in fws for f in p["flows"] if f["daddr"] == dc.network and not f["inbound"]]
        target = {"host": dc.host, "flow": flows[0] if flows else {"id": "-", "port": 443}}
        out.append((m.id, fws, lan.model_dump(), target, fw_models[0].site))
    return out


def from_inventory(inventory: Any, home: Path) -> list[Collector]:
    out: list[Collector] = []
    for muni, fws, lan, target, site in _targets(inventory):
        declared_ports = {f["port"] for p in fws for f in p["flows"]}
        undeclared = next(p for p in (5432, 22, 8080, 3389) if p not in declared_ports)
        out.append(PathCollector(muni, fws, lan, target, undeclared, site))
        out.append(TrafficCollector(muni, fws, lan, target, undeclared, site))
    return out
