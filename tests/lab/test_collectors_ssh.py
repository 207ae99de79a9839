"""The level-b collectors over SSH against real sshd + nftables in the tests' own namespaces
(``skt-*``): the evidence is what ``nft`` shows inside the host, a firewall that cannot be
reached is that firewall's ``error`` naming it and the cause, and the IPS facts (config, rules,
eve.json, processes of that host only) come from the host. Needs root; no lab lock."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from audit.collectors import nftables, run_collectors, suricata
from estate.inventory import Firewall, Inventory, Municipality, Site
from policies.named.level_b import nft_default_deny
from tests.conftest import require_root
from tests.lab.ssh_hosts import Hosts

RULESET = """table inet skydd_fw1 {
  chain input {
    type filter hook input priority 0; policy drop;
    iif "lo" accept
    ct state established,related accept
    ip saddr 198.51.100.0/24 tcp dport 22 accept
  }
  chain forward {
    type filter hook forward priority -10; policy drop;
    log prefix "fw-fwd-drop: " group 1
  }
}
"""
SURICATA_YAML = """%YAML 1.1
---
default-log-dir: {dir}/log
default-rule-path: {dir}/rules
rule-files: [suricata.rules, missing.rules]
nfq: {{mode: accept, fail-open: no}}
outputs:
  - eve-log: {{enabled: yes, filename: eve.json}}
"""
RULES = """drop tls any any -> any any (msg:"probe"; tls.sni; content:"ips-probe.skydd.invalid"; \
classtype:policy-violation; sid:9100001; rev:1;)
alert tcp any any -> any 80 (msg:"web"; sid:9100002; rev:1;)
# drop tcp any any -> any 23 (msg:"off"; sid:9100003; rev:1;)
"""


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Hosts]:
    require_root()
    hosts = Hosts(tmp_path)
    procs: list[subprocess.Popen[bytes]] = []
    hosts.procs = procs  # type: ignore[attr-defined]
    try:
        yield hosts
    finally:
        for p in procs:
            p.kill()
            p.wait(5)
        hosts.close()


def inventory(lab: Hosts, names: list[str], tmp_path: Path, **conn: object) -> Inventory:
    fws = []
    for i, name in enumerate(names):
        host = next((h for h in lab.hosts if h.name == name), None)
        connection = lab.connection(host, **conn) if host else lab.connection(
            lab.hosts[0], address="198.51.100.250", timeout=2.0)
        fws.append(Firewall(id=name, municipality="sunne", site="sunne", position=1 + i % 2,
                            ips=True, state_dir=str(tmp_path / name), connection=connection))
    return Inventory(name="ssh-test", municipalities=[Municipality(id="sunne", name="Sunne")],
                     sites=[Site(id="sunne", name="Sunne", municipality="sunne")], firewalls=fws)


def test_the_ruleset_over_ssh_is_the_one_nft_shows_inside_the_host(lab: Hosts, tmp_path: Path) -> None:
    host = lab.add("sunne-fw1")
    host.ns("nft", "-f", "-", input=RULESET)
    inv = inventory(lab, ["sunne-fw1"], tmp_path)
    collectors = nftables.from_inventory(inv, tmp_path)
    assert [type(c).__name__ for c in collectors] == ["NftablesOverSsh"]
    (ev,) = run_collectors(collectors)
    assert ev.error is None, ev.error
    assert (ev.kind, ev.target, ev.source, ev.site) == ("nftables.ruleset", "sunne-fw1",
                                                        "nftables:sunne-fw1", "sunne")
    inside = json.loads(host.ns("nft", "-j", "list", "ruleset").stdout)["nftables"]
    assert ev.data["nftables"] == inside
    assert ev.data["firewall"] == "sunne-fw1" and ev.data["ip_forward"] is False
    assert nft_default_deny(ev.data, {}, None).ok  # the engine's check reads it as it is
    assert host.accepted_logins() == 1


def test_an_unreachable_firewall_is_its_own_error_and_the_other_is_collected(
        lab: Hosts, tmp_path: Path) -> None:
    up, down = lab.add("sunne-fw1"), lab.add("sunne-fw2")
    up.ns("nft", "-f", "-", input=RULESET)
    down.stop()
    evidence = {e.target: e for e in run_collectors(nftables.from_inventory(
        inventory(lab, ["sunne-fw1", "sunne-fw2"], tmp_path), tmp_path))}
    assert set(evidence) == {"sunne-fw1", "sunne-fw2"}
    assert evidence["sunne-fw1"].error is None and evidence["sunne-fw1"].data["nftables"]
    err = evidence["sunne-fw2"]
    assert err.data is None and err.source == "nftables:sunne-fw2"
    assert err.error.startswith(f"sunne-fw2 ({down.address}:22): unreachable: Connection refused")


def test_the_ips_facts_come_from_the_host_and_only_its_own_processes(lab: Hosts, tmp_path: Path) -> None:
    host, other = lab.add("sunne-fw1"), lab.add("sunne-fw2")
    host.ns("nft", "-f", "-", input=RULESET)
    folder = tmp_path / "sunne-fw1" / "ips"
    (folder / "rules").mkdir(parents=True)
    (folder / "log").mkdir()
    (folder / "suricata.yaml").write_text(SURICATA_YAML.format(dir=folder))
    (folder / "rules" / "suricata.rules").write_text(RULES)
    (folder / "log" / "eve.json").write_text(
        '{"event_type":"stats","timestamp":"t","stats":{"ips":{"accepted":5,"blocked":1}}}\n'
        '{"event_type":"alert","alert":{"action":"blocked","signature_id":9100001}}\n')
    fake = tmp_path / "suricata"  # a process whose comm is "suricata", one per namespace
    shutil.copy("/bin/sleep", fake)
    for h in (host, other):
        lab.procs.append(subprocess.Popen(["ip", "netns", "exec", h.namespace, str(fake), "60",
                                           str(len(lab.procs))]))
    inv = inventory(lab, ["sunne-fw1"], tmp_path)
    (ev,) = run_collectors(suricata.from_inventory(inv, tmp_path))
    assert ev.error is None, ev.error
    d = ev.data
    assert d["configured"] and d["config"]["nfq_mode"] == "accept" and not d["config"]["fail_open"]
    assert d["rules"]["total"] == 3 and d["rules"]["enabled"] == 2
    assert [r["sid"] for r in d["rules"]["drop"]] == [9100001]
    assert d["rules"]["updated_at"].endswith("Z")
    assert d["eve"]["exists"] and d["eve"]["stats"]["blocked"] == 1 and d["eve"]["blocked"] == 1
    assert [p["cmdline"] for p in d["processes"]] == [[str(fake), "60", "0"]]
    assert d["running"] and d["bound_queues"] == [] and d["queue_rules"] == []
    assert d["installed"] == (shutil.which("suricata") is not None)
