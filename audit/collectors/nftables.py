"""Firewall rule sets: per firewall ``nft -j list ruleset`` (every table, every base chain on
every hook), ``iptables-save`` (xt NFQUEUE rules carry their queue number and bypass flag only
there) and whether the firewall forwards at all. Judging is the engine's job
(``policies/named/level_b.py``); this module only observes, in the firewall's namespace when it
has one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from .interface import Collector, CollectorError, Observation


@contextlib.contextmanager
def ns_lock(namespace: str | None) -> Iterator[None]:
    """Serialise readers and the traffic probe on one firewall: the probe opens a firewall or
    stops its IPS for a moment, and no collector may observe that moment as the firewall's state.
    ``flock`` on a file per namespace holds across threads and processes."""
    path = Path("/run/lock" if Path("/run/lock").is_dir() else "/tmp") / f"skydd-fw-{namespace or 'host'}.lock"
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def in_namespace(namespace: str | None, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", namespace, *cmd] if namespace else list(cmd)


def run(namespace: str | None, *cmd: str, timeout: float = 20, check: bool = True
        ) -> subprocess.CompletedProcess[str]:
    """Run a command (in a namespace); a missing tool or namespace is a ``CollectorError``."""
    if shutil.which(cmd[0]) is None:
        raise CollectorError(f"{cmd[0]} is not installed (Debian package: "
                             f"{_PACKAGES.get(cmd[0], cmd[0])}; run 'make deps')")
    if namespace and not Path(f"/run/netns/{namespace}").exists():
        raise CollectorError(f"network namespace {namespace} does not exist (is the lab up?)")
    try:
        proc = subprocess.run(in_namespace(namespace, *cmd), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise CollectorError(f"{' '.join(cmd)}: no answer within {timeout:g} s") from err
    if check and proc.returncode != 0:
        raise CollectorError(f"{' '.join(cmd)}: {(proc.stderr or proc.stdout).strip()[:300]}")
    return proc


_PACKAGES = {"nft": "nftables", "iptables-save": "iptables", "suricata": "suricata",
             "ip": "iproute2"}


def ruleset(namespace: str | None) -> list[dict[str, Any]]:
    out = run(namespace, "nft", "-j", "list", "ruleset").stdout
    try:
        doc = json.loads(out) if out.strip() else {"nftables": []}
    except json.JSONDecodeError as err:
        raise CollectorError(f"nft -j list ruleset: not JSON: {err}") from err
    items = doc.get("nftables")
    if not isinstance(items, list):
        raise CollectorError("nft -j list ruleset: no 'nftables' list")
    return items


def iptables_save(namespace: str | None) -> str:
    if shutil.which("iptables-save") is None:
        return ""
    return run(namespace, "iptables-save", check=False).stdout


class NftablesCollector(Collector):
    kinds = ("nftables.ruleset",)
    timeout = 150.0  # may wait for the traffic probe's hold on the firewall

    def __init__(self, source_id: str, plan: dict[str, Any], **kw: str | None) -> None:
        super().__init__(source_id, **kw)
        self.plan = plan

    def collect(self) -> Iterable[Observation]:
        ns = self.plan.get("namespace")
        with ns_lock(ns):
            forward = run(ns, "sysctl", "-n", "net.ipv4.ip_forward", check=False).stdout.strip()
            nft, saved = ruleset(ns), iptables_save(ns)
        yield Observation(self.kinds[0], self.source_id, {
            "firewall": self.source_id,
            "position": self.plan["position"],
            "plan": {k: self.plan[k] for k in ("flows", "management_network", "management_ports",
                                                "lan", "inside", "outside", "table")},
            "ip_forward": forward == "1",
            "nftables": nft,
            "iptables_save": saved,
        })


def plans(inventory: Any) -> Sequence[dict[str, Any]]:
    from estate.network_plan import firewall_plan
    return [firewall_plan(inventory, fw) for fw in inventory.firewalls]


def from_inventory(inventory: Any, home: Path) -> list[Collector]:
    return [NftablesCollector(p["id"], p, site=p["site"], municipality=p["municipality"])
            for p in plans(inventory)]
