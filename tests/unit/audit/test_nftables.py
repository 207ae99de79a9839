"""The level-b rule-set reading: queue rules from nft JSON and iptables-save, accept paths
through jumps, sets and verdict maps, and the role templates rendered for both queue backends."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import jinja2
import pytest

from audit.collectors.suricata import queue_rules, read_config
from estate.loader import load_inventory
from estate.network_plan import firewall, firewall_plan
from policies.named.level_b import (
    Ruleset,
    describe,
    nft_declared_flows_only,
    nft_default_deny,
    nft_drop_logging,
    nft_management_restricted,
)
from skydd.lab import LAB_INVENTORY

AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ROLES = Path(__file__).resolve().parents[3] / "playbooks" / "roles"
FLOW = {"id": "staff-https", "saddr": "10.1.1.0/24", "daddr": "10.0.10.0/24", "protocol": "tcp",
        "port": 443, "inbound": False}
PLAN = {"flows": [FLOW], "management_network": "10.1.9.0/24", "management_ports": [22]}


def chain(name, hook=None, policy="drop", family="inet", table="t", prio=0):
    c = {"family": family, "table": table, "name": name, "handle": 1}
    if hook:
        c.update(type="filter", hook=hook, prio=prio, policy=policy)
    return {"chain": c}


def rule(chain_name, *expr, family="inet", table="t"):
    return {"rule": {"family": family, "table": table, "chain": chain_name, "handle": 2,
                     "expr": list(expr)}}


def m(proto, field, right, op="=="):
    return {"match": {"op": op, "left": {"payload": {"protocol": proto, "field": field}},
                      "right": right}}


def prefix(net):
    addr, length = net.split("/")
    return {"prefix": {"addr": addr, "len": int(length)}}


ACCEPT = {"accept": None}
LOG = {"log": {"prefix": "drop: ", "group": 1}}


def evidence(*items):
    return {"plan": PLAN, "nftables": list(items)}


def test_declared_flow_behind_a_jump_passes_and_an_extra_port_fails() -> None:
    items = [chain("input", "input"), chain("forward", "forward"), chain("flows"),
             rule("forward", {"jump": {"target": "flows"}}),
             rule("flows", m("ip", "saddr", prefix("10.1.1.0/24")), m("ip", "daddr", prefix("10.0.10.0/24")),
                  m("tcp", "dport", 443), ACCEPT)]
    assert nft_declared_flows_only(evidence(*items), {}, AT).ok
    extra = [*items, rule("flows", m("ip", "saddr", prefix("10.1.1.0/24")),
                          m("ip", "daddr", prefix("10.0.10.0/24")), m("tcp", "dport", {"set": [443, 5432]}), ACCEPT)]
    out = nft_declared_flows_only(evidence(*extra), {}, AT)
    assert not out.ok and "5432" in out.detail


def test_an_accept_policy_chain_on_the_same_hook_does_not_undo_a_drop_chain() -> None:
    # iptables-nft's FORWARD (policy accept, prio 0) beside our drop chain: still default deny.
    items = [chain("in", "input"), chain("fwd", "forward", prio=-10),
             chain("FORWARD", "forward", policy="accept", family="ip", table="filter"),
             rule("FORWARD", {"xt": {"type": "target", "name": "NFQUEUE"}}, family="ip", table="filter")]
    assert nft_default_deny(evidence(*items), {}, AT).ok


def test_ipv6_only_drop_chain_is_not_default_deny_for_ipv4() -> None:
    items = [chain("in", "input", family="ip6"), chain("fwd", "forward", family="ip6")]
    out = nft_default_deny(evidence(*items), {}, AT)
    assert not out.ok and "forward: no default-deny chain" in out.detail


def test_unconditional_accept_in_a_jumped_chain_opens_the_hook() -> None:
    items = [chain("in", "input"), chain("fwd", "forward"), chain("sub"),
             rule("fwd", {"jump": {"target": "sub"}}), rule("sub", {"counter": None}, ACCEPT)]
    assert not nft_default_deny(evidence(*items), {}, AT).ok


def test_verdict_map_accepting_new_connections_is_undeclared() -> None:
    vmap = {"vmap": {"key": {"ct": {"key": "state"}},
                     "data": {"set": [["established", ACCEPT], ["new", ACCEPT]]}}}
    items = [chain("in", "input"), chain("fwd", "forward"), rule("fwd", vmap)]
    assert not nft_declared_flows_only(evidence(*items), {}, AT).ok
    stateful = {"vmap": {"key": {"ct": {"key": "state"}},
                         "data": {"set": [["established", ACCEPT], ["related", ACCEPT]]}}}
    assert nft_declared_flows_only(evidence(chain("fwd", "forward"), rule("fwd", stateful)), {}, AT).ok


def test_set_lookup_expands_to_its_elements() -> None:
    concat = {"concat": [{"payload": {"protocol": "ip", "field": "saddr"}},
                         {"payload": {"protocol": "ip", "field": "daddr"}},
                         {"payload": {"protocol": "tcp", "field": "dport"}}]}
    s = {"set": {"family": "inet", "table": "t", "name": "ok", "elem": [
        {"concat": [prefix("10.1.1.0/24"), prefix("10.0.10.0/24"), 443]}]}}
    r = rule("fwd", {"match": {"op": "==", "left": concat, "right": "@ok"}}, ACCEPT)
    rs = Ruleset([chain("fwd", "forward"), s, r])
    (path,) = list(rs.accept_paths(("inet", "t", "fwd")))
    (t,) = describe(path, rs, ("inet", "t", "fwd"))
    assert t["ports"] == {443} and str(t["saddr"]) == "10.1.1.0/24"
    empty = {"set": {"family": "inet", "table": "t", "name": "ok"}}
    rs = Ruleset([chain("fwd", "forward"), empty, r])
    assert describe(next(rs.accept_paths(("inet", "t", "fwd"))), rs, ("inet", "t", "fwd")) == []


def test_management_must_come_from_the_management_network_only() -> None:
    ok = [chain("in", "input"), rule("in", m("ip", "saddr", prefix("10.1.9.0/24")), m("tcp", "dport", 22), ACCEPT)]
    assert nft_management_restricted(evidence(*ok), {}, AT).ok
    wide = [chain("in", "input"), rule("in", m("ip", "saddr", prefix("10.0.0.0/8")), m("tcp", "dport", 22), ACCEPT)]
    assert not nft_management_restricted(evidence(*wide), {}, AT).ok


def test_drop_logging_needs_an_unconditional_log_last() -> None:
    logged = [chain("in", "input"), chain("fwd", "forward"), rule("in", LOG), rule("fwd", LOG)]
    assert nft_drop_logging(evidence(*logged), {}, AT).ok
    conditional = [chain("in", "input"), chain("fwd", "forward"), rule("in", LOG),
                   rule("fwd", m("tcp", "dport", 22), LOG)]
    assert not nft_drop_logging(evidence(*conditional), {}, AT).ok


def test_queue_rules_from_native_nft_and_from_iptables_save() -> None:
    nft = [chain("q", "forward", policy="accept"),
           rule("q", {"queue": {"num": 3, "flags": "bypass"}}),
           rule("q", {"queue": {"num": 4}})]
    saved = ("*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -m mark ! --mark 0x1/0x1 -m comment "
             "--comment \"skydd ips queue\" -j NFQUEUE --queue-num 0\nCOMMIT\n")
    got = queue_rules(nft, saved)
    assert [(q["backend"], q["num"], q["bypass"], q["hook"]) for q in got] == [
        ("nft", 3, True, "forward"), ("nft", 4, False, "forward"), ("iptables", 0, False, "forward")]
    assert queue_rules([], saved.replace("--queue-num 0", "--queue-num 0 --queue-bypass"))[0]["bypass"]


def _render(role: str, template: str, **variables) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ROLES / role / "templates"),
                             undefined=jinja2.StrictUndefined, trim_blocks=True)
    return env.get_template(template).render(**variables)


@pytest.mark.parametrize("mode, bypass", [("closed", False), ("open", True)])
def test_native_nft_queue_template_carries_the_fail_mode(mode: str, bypass: bool) -> None:
    text = _render("suricata_ips", "queue.nft.j2", suricata_ips_plan={"id": "fw2"},
                   suricata_ips_repeat_mark=1, suricata_ips_queue_num=0, suricata_ips_fail_mode=mode)
    (line,) = [ln.strip() for ln in text.splitlines() if " queue num " in ln]
    assert line == "meta mark & 1 != 1 queue num 0" + (" bypass" if bypass else "")
    assert "hook forward priority filter;" in text


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_suricata_config_renders_the_fail_mode_and_is_read_back(tmp_path: Path, mode: str) -> None:
    text = _render("suricata_ips", "suricata.yaml.j2", suricata_ips_plan={"id": "fw2"},
                   suricata_ips_queue_num=0, suricata_ips_fail_mode=mode, suricata_ips_home_net="[10.0.0.0/8]",
                   suricata_ips_dir="/srv/ips", suricata_ips_repeat_mark=1)
    (tmp_path / "suricata.yaml").write_text(text)
    conf = read_config(tmp_path / "suricata.yaml")
    assert conf["nfq_mode"] == "repeat" and conf["eve_enabled"]
    assert conf["fail_open"] is (mode == "open")
    assert conf["eve_path"] == "/srv/ips/log/eve.json"


def test_fw1_and_fw2_rule_sets_differ_and_each_allows_the_declared_flow() -> None:
    inv, _ = load_inventory(LAB_INVENTORY, home=Path("/srv/skydd"))
    texts = {}
    for fw_id in ("sunne-fw1", "sunne-fw2"):
        plan = firewall_plan(inv, firewall(inv, fw_id))
        texts[fw_id] = _render("nftables_firewall", f"fw{plan['position']}.nft.j2",
                               nftables_firewall_plan=plan, nftables_firewall_default_deny=True,
                               nftables_firewall_management=True, nftables_firewall_logging=True,
                               nftables_firewall_declared_flows=True, nftables_firewall_log_group=1)
    assert "table inet skydd_fw1 {" in texts["sunne-fw1"] and "skydd_fw2" not in texts["sunne-fw1"]
    assert "table inet skydd_fw2 {" in texts["sunne-fw2"]
    assert "ip saddr 10.2.1.0/24 ip daddr 10.0.10.0/24 tcp dport 443" in texts["sunne-fw1"]
    assert "10.2.1.0/24 . 10.0.10.0/24 . 443" in texts["sunne-fw2"]
    for text in texts.values():
        assert "policy drop;" in text and "ip saddr 10.2.9.0/24" in text
