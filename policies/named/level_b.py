"""Level b: the perimeter. Checks over ``nft -j list ruleset`` (every table and every base chain
on a hook: a packet passes a hook only if every base chain on it lets it through, so one chain
with ``policy drop`` and no unconditional accept makes the hook default-deny), over Suricata's
observed state, and over the network path.

An accept *path* is the list of match conditions on the way to an ``accept`` verdict, following
``jump``/``goto`` into regular chains. A path is declared when its protocol, port, source and
destination fall inside one declared flow.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from ..checks import Outcome, named_check, parse_duration, parse_time, resolve
from ..errors import EvidenceMissing

HOOKS = ("input", "forward")
_STATEFUL = {"established", "related"}


# -- reading the rule set ---------------------------------------------------------------------

class Ruleset:
    def __init__(self, items: list[Any]) -> None:
        if not isinstance(items, list):
            raise EvidenceMissing("nftables is not a list (nft -j list ruleset)")
        self.chains: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.rules: dict[tuple[str, str, str], list[list[Any]]] = {}
        self.sets: dict[tuple[str, str, str], list[Any]] = {}
        for item in items:
            if not isinstance(item, Mapping):
                continue
            if "chain" in item:
                c = item["chain"]
                self.chains[(c["family"], c["table"], c["name"])] = c
            elif "rule" in item:
                r = item["rule"]
                self.rules.setdefault((r["family"], r["table"], r["chain"]), []).append(r.get("expr", []))
            elif "set" in item:
                s = item["set"]
                self.sets[(s["family"], s["table"], s["name"])] = s.get("elem", [])

    def base_chains(self, hook: str) -> list[tuple[tuple[str, str, str], dict[str, Any]]]:
        return [(k, c) for k, c in self.chains.items()
                if c.get("hook") == hook and c.get("type", "filter") == "filter"]

    def accept_paths(self, key: tuple[str, str, str], depth: int = 0) -> Iterator[list[Any]]:
        """Conditions leading to ``accept`` in a chain (and the chains it jumps to)."""
        if depth > 16:
            return
        for expr in self.rules.get(key, []):
            conds = [e for e in expr if isinstance(e, Mapping) and "match" in e]
            for e in expr:
                if not isinstance(e, Mapping):
                    continue
                if "accept" in e:
                    yield conds
                elif "vmap" in e:
                    for k, verdict in e["vmap"].get("data", {}).get("set", []):
                        if isinstance(verdict, Mapping) and "accept" in verdict:
                            yield [*conds, {"match": {"op": "==", "left": e["vmap"]["key"], "right": k}}]
                elif "jump" in e or "goto" in e:
                    verdict_node: Any = e.get("jump") or e.get("goto")  # nft JSON: {"target": chain}
                    target = verdict_node["target"]
                    for sub in self.accept_paths((key[0], key[1], target), depth + 1):
                        yield conds + sub

    def elements(self, family: str, table: str, ref: str) -> list[Any]:
        return self.sets.get((family, table, ref.lstrip("@")), [])


def _left(m: Mapping[str, Any]) -> str:
    left = m.get("left")
    if isinstance(left, Mapping):
        if "payload" in left:
            return f"{left['payload'].get('protocol')}.{left['payload'].get('field')}"
        if "meta" in left:
            return f"meta.{left['meta'].get('key')}"
        if "ct" in left:
            return f"ct.{left['ct'].get('key')}"
    return "?"


def _net(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    if isinstance(value, Mapping) and "prefix" in value:
        return ipaddress.ip_network(f"{value['prefix']['addr']}/{value['prefix']['len']}", strict=False)
    if isinstance(value, str) and not value.startswith("@"):
        return ipaddress.ip_network(value, strict=False)
    return None


def _ports(value: Any) -> set[int] | None:
    if isinstance(value, int):
        return {value}
    if isinstance(value, Mapping) and "set" in value:
        vals = value["set"]
        if all(isinstance(v, int) for v in vals):
            return set(vals)
    if isinstance(value, Mapping) and "range" in value:
        lo, hi = value["range"]
        return set(range(lo, hi + 1))
    return None


def describe(path: list[Any], rs: Ruleset, key: tuple[str, str, str]) -> list[dict[str, Any]]:
    """The tuples (proto, ports, saddr, daddr, kind) an accept path lets through; several when
    a set lookup lists elements. ``kind`` is ``stateful`` or ``loopback`` for those shortcuts."""
    base: dict[str, Any] = {"proto": None, "ports": None, "saddr": None, "daddr": None, "kind": None}
    lookups: list[list[dict[str, Any]]] = []
    for cond in path:
        m = cond["match"]
        if m.get("op") not in ("==", "in"):
            continue
        left, right = _left(m), m.get("right")
        if left == "ct.state":
            states = {right} if isinstance(right, str) else set(right or [])
            if states and states <= _STATEFUL:
                base["kind"] = "stateful"
        elif left in ("meta.iif", "meta.iifname") and right == "lo":
            base["kind"] = "loopback"
        elif left.endswith(".saddr"):
            base["saddr"] = _net(right)
        elif left.endswith(".daddr"):
            base["daddr"] = _net(right)
        elif left.endswith(".dport"):
            base["proto"], base["ports"] = left.split(".")[0], _ports(right)
        elif isinstance(m.get("left"), Mapping) and "concat" in m["left"] and isinstance(right, str):
            fields = [_left({"left": f}) for f in m["left"]["concat"]]
            rows = []
            for el in rs.elements(key[0], key[1], right):
                vals = el.get("concat", []) if isinstance(el, Mapping) else []
                row: dict[str, Any] = {}
                for f, v in zip(fields, vals, strict=False):  # a malformed element has no values
                    if f.endswith(".saddr"):
                        row["saddr"] = _net(v)
                    elif f.endswith(".daddr"):
                        row["daddr"] = _net(v)
                    elif f.endswith(".dport"):
                        row["proto"], row["ports"] = f.split(".")[0], _ports(v)
                rows.append(row)
            lookups.append(rows)
    out = [base]
    for rows in lookups:  # an empty set lets nothing through
        out = [{**o, **r} for o in out for r in rows]
    return out


def _within(t: dict[str, Any], flows: list[Mapping[str, Any]]) -> bool:
    if t["ports"] is None or t["saddr"] is None or t["daddr"] is None:
        return False
    for f in flows:
        if (t["proto"] == f["protocol"] and t["ports"] <= {int(f["port"])}
                and t["saddr"].subnet_of(ipaddress.ip_network(f["saddr"]))
                and t["daddr"].subnet_of(ipaddress.ip_network(f["daddr"]))):
            return True
    return False


def _fmt(t: dict[str, Any]) -> str:
    ports = ",".join(str(p) for p in sorted(t["ports"])) if t["ports"] else "any"
    return f"{t['proto'] or 'any'}/{ports} {t['saddr'] or 'any'} → {t['daddr'] or 'any'}"


def _deny_chains(rs: Ruleset, hook: str) -> list[tuple[tuple[str, str, str], list[str]]]:
    """Drop-policy chains on ``hook`` covering IPv4, each with what it lets through."""
    out = []
    for key, c in rs.base_chains(hook):
        if c.get("policy") != "drop" or key[0] not in ("inet", "ip"):
            continue
        out.append((key, [_fmt(t) for p in rs.accept_paths(key) for t in describe(p, rs, key)
                          if t["kind"] is None]))
    return out


def _ruleset(data: Any) -> Ruleset:
    return Ruleset(resolve(data, ("nftables",), "nftables"))


# -- firewall checks --------------------------------------------------------------------------

@named_check("nft_default_deny")
def nft_default_deny(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    """Input and forward each have a drop-policy filter chain without an unconditional accept."""
    rs = _ruleset(data)
    bad, seen = [], {}
    for hook in params.get("hooks", HOOKS):
        chains = _deny_chains(rs, hook)
        wide = [k for k, opens in chains
                if any(o == "any/any any → any" for o in opens)]
        ok = [k for k, _ in chains if k not in wide]
        seen[hook] = [".".join(k) for k in ok]
        if not ok:
            bad.append(f"{hook}: no default-deny chain" + (f" (unconditional accept in "
                       f"{', '.join('.'.join(k) for k in wide)})" if wide else ""))
    if bad:
        return Outcome(False, "; ".join(bad), seen)
    return Outcome(True, "default deny on " + ", ".join(f"{h} ({', '.join(c)})" for h, c in seen.items()), seen)


@named_check("nft_declared_flows_only")
def nft_declared_flows_only(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    """Every forward accept path, in every drop-policy chain, lies within one declared flow."""
    rs = _ruleset(data)
    flows = resolve(data, ("plan", "flows"), "plan.flows")
    chains = _deny_chains(rs, "forward")
    if not chains:
        return Outcome(False, "forward has no default-deny chain: every flow is allowed", {})
    undeclared: dict[str, list[str]] = {}
    for key, _chain in chains:
        for p in rs.accept_paths(key):
            for t in describe(p, rs, key):
                if t["kind"] is None and not _within(t, flows):
                    undeclared.setdefault(".".join(key), []).append(_fmt(t))
    if undeclared:
        listed = "; ".join(f"{k}: {', '.join(v[:4])}" for k, v in undeclared.items())
        return Outcome(False, f"undeclared flows allowed: {listed}", undeclared)
    return Outcome(True, f"forward allows only the {len(flows)} declared flow(s)",
                   {"flows": [f["id"] for f in flows]})


@named_check("nft_management_restricted")
def nft_management_restricted(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    """Input is default-deny and opens nothing but the management ports, to the management net."""
    rs = _ruleset(data)
    mgmt = resolve(data, ("plan", "management_network"), "plan.management_network")
    ports = set(resolve(data, ("plan", "management_ports"), "plan.management_ports"))
    if not mgmt:
        raise EvidenceMissing("the inventory declares no management network for this firewall")
    chains = _deny_chains(rs, "input")
    if not chains:
        return Outcome(False, "input has no default-deny chain: management is reachable from anywhere", {})
    net = ipaddress.ip_network(mgmt)
    wrong = []
    for key, _ in chains:
        for p in rs.accept_paths(key):
            for t in describe(p, rs, key):
                if t["kind"] is not None:
                    continue
                if not (t["saddr"] is not None and t["saddr"].subnet_of(net)
                        and t["ports"] is not None and t["ports"] <= ports):
                    wrong.append(_fmt(t))
    if wrong:
        return Outcome(False, f"input open beyond management from {mgmt}: {', '.join(wrong[:5])}",
                       {"open": wrong})
    return Outcome(True, f"input: only {sorted(ports)} from {mgmt}", {"management_network": mgmt})


@named_check("nft_drop_logging")
def nft_drop_logging(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    """Each default-deny chain logs (NFLOG group or prefix) unconditionally before its drop."""
    rs = _ruleset(data)
    missing, logged = [], {}
    for hook in params.get("hooks", HOOKS):
        chains = _deny_chains(rs, hook)
        if not chains:
            missing.append(f"{hook}: no default-deny chain, so nothing is dropped or logged")
        for key, _ in chains:
            last = rs.rules.get(key, [])[-1:] or [[]]
            logs = [e["log"] for e in last[0] if isinstance(e, Mapping) and "log" in e]
            unconditional = not any("match" in e for e in last[0] if isinstance(e, Mapping))
            if logs and unconditional:
                logged[".".join(key)] = logs[0]
            else:
                missing.append(f"{'.'.join(key)}: no log rule before the drop")
    if missing:
        return Outcome(False, "; ".join(missing), logged)
    return Outcome(True, "drops logged in " + ", ".join(logged), logged)


# -- path ---------------------------------------------------------------------------------------

@named_check("path_two_firewalls")
def path_two_firewalls(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    """The path to the classified segment crosses fw1 then fw2, and both filter what they forward."""
    hops = resolve(data, ("hops",), "hops")
    if not resolve(data, ("reached",), "reached"):
        raise EvidenceMissing("the route to the classified segment could not be traced")
    fws = [h for h in hops if h.get("firewall")]
    order = [h["position"] for h in fws]
    names = " → ".join(str(h.get("host") or h.get("address")) for h in hops)
    if order != [1, 2]:
        return Outcome(False, f"path {names} crosses firewalls at positions {order}, expected [1, 2]",
                       {"hops": names})
    passive = [h["firewall"] for h in fws
               if not any(c.get("policy") == "drop" and c.get("family") in ("inet", "ip")
                          for c in h.get("forward_chains", []))]
    if passive:
        return Outcome(False, f"path {names}: {', '.join(passive)} forward(s) everything "
                              "(no default-deny forward chain), so it is not a firewall in series",
                       {"hops": names, "passive": passive})
    return Outcome(True, f"path {names}: two filtering firewalls in series", {"hops": names})


# -- IPS ----------------------------------------------------------------------------------------

def _ips(data: Any) -> Mapping[str, Any]:
    if not isinstance(data, Mapping) or "running" not in data:
        raise EvidenceMissing("no Suricata observation")
    return data


def _forward_queues(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [q for q in data.get("queue_rules") or [] if q.get("hook") == "forward"]


@named_check("ips_inline_prevention")
def ips_inline_prevention(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    d = _ips(data)
    problems = []
    queues = _forward_queues(d)
    if not d.get("installed"):
        problems.append("Suricata is not installed")
    if not d["running"]:
        problems.append("Suricata is not running")
    if not queues:
        problems.append("no forward rule hands packets to a queue (not inline)")
    bound = {q["queue"] for q in d.get("bound_queues") or []}
    unbound = [q["num"] for q in queues if q["num"] not in bound]
    if queues and unbound:
        problems.append(f"queue {unbound} has no listener")
    argv_ok = any("-q" in p.get("cmdline", []) or any(a.startswith("--nfq") for a in p.get("cmdline", []))
                  for p in d.get("processes") or [])
    if d["running"] and not argv_ok:
        problems.append("Suricata does not read from NFQUEUE (IDS mode)")
    conf = d.get("config") or {}
    if conf and conf.get("nfq_mode") not in ("accept", "repeat"):
        problems.append(f"nfq mode {conf.get('nfq_mode')!r} is not a prevention mode")
    drops = len((d.get("rules") or {}).get("drop") or [])
    if drops == 0:
        problems.append("no drop rules loaded, so it prevents nothing")
    observed = {"running": d["running"], "queues": [q["num"] for q in queues], "bound": sorted(bound),
                "drop_rules": drops}
    if problems:
        return Outcome(False, "; ".join(problems), observed)
    return Outcome(True, f"inline on queue {sorted(bound)} with {drops} drop rules", observed)


@named_check("ips_rules_fresh")
def ips_rules_fresh(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    d = _ips(data)
    rules = d.get("rules") or {}
    updated = rules.get("updated_at")
    max_age = params.get("max_age", "7d")
    if not updated or not rules.get("enabled"):
        return Outcome(False, "no ruleset from suricata-update is loaded", {"updated_at": updated})
    age = at - parse_time(updated)
    ok = age <= parse_duration(max_age)
    return Outcome(ok, f"rules updated {updated} ({age.days} d ago), expected within {max_age}; "
                       f"{rules['enabled']} enabled", {"updated_at": updated})


@named_check("ips_drop_categories")
def ips_drop_categories(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    d = _ips(data)
    wanted = list(params.get("categories") or [])
    if not wanted:
        raise EvidenceMissing("the control names no required categories")
    drops = (d.get("rules") or {}).get("drop") or []
    have = {r.get("classtype") for r in drops}
    missing = [c for c in wanted if c not in have]
    observed = {"drop_classtypes": sorted(c for c in have if c)}
    if missing:
        return Outcome(False, f"no drop rule for {', '.join(missing)}", observed)
    return Outcome(True, f"drop rules for {', '.join(wanted)}", observed)


@named_check("ips_fail_mode")
def ips_fail_mode(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    """The queue's bypass flag (and Suricata's fail-open) match the declared fail mode."""
    d = _ips(data)
    declared = d.get("declared_fail_mode")
    if declared not in ("open", "closed"):
        raise EvidenceMissing("no declared fail mode")
    queues = _forward_queues(d)
    if not queues:
        return Outcome(False, f"declared fail-{declared}, but nothing is queued to the IPS", {})
    want_bypass = declared == "open"
    wrong = [f"{q['backend']} {q['chain']} queue {q['num']} bypass={q['bypass']}"
             for q in queues if q["bypass"] != want_bypass]
    conf = d.get("config") or {}
    if conf and conf.get("fail_open") != want_bypass:
        wrong.append(f"nfq fail-open={conf.get('fail_open')}")
    observed = {"declared": declared, "queues": [dict(q) for q in queues]}
    if wrong:
        return Outcome(False, f"declared fail-{declared}, observed: {'; '.join(wrong)}", observed)
    return Outcome(True, f"fail-{declared} as declared", observed)


# -- traffic proof ------------------------------------------------------------------------------

@named_check("traffic_fail_mode")
def traffic_fail_mode(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    """With Suricata stopped, the declared flow passed (fail-open) or not (fail-closed) as declared."""
    stopped = resolve(data, ("ips_stopped",), "ips_stopped")
    declared = stopped.get("declared_fail_mode")
    observed = stopped.get("observed")
    seen = {"declared": declared, "observed": observed, "suricata_was_running": stopped.get("suricata_was_running")}
    if not stopped.get("suricata_was_running"):
        return Outcome(False, f"no Suricata was running, so the declared fail-{declared} could not "
                              f"be shown (without an IPS: traffic {observed})", seen)
    if observed != declared:
        return Outcome(False, f"with Suricata stopped traffic was {observed}, declared fail-{declared}", seen)
    return Outcome(True, f"with Suricata stopped the declared flow was {observed}, as declared", seen)
