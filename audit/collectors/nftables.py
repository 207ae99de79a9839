"""Firewall rule sets: per firewall ``nft -j list ruleset`` (every table, every base chain on
every hook), ``iptables-save`` (xt NFQUEUE rules carry their queue number and bypass flag only
there) and whether the firewall forwards at all. Judging is the engine's job
(``policies/named/level_b.py``); this module only observes.

A firewall with an ssh ``connection`` is observed over SSH (``audit.remote``): every such
firewall at once, at most ``SSH_LIMIT`` connected at a time, one connection each, and a
firewall that cannot be reached is that firewall's ``error`` (naming it and the cause) while the
others are collected. A firewall whose connection is ``local`` is this machine, observed with
the same commands run here; a firewall without a connection is an ``error`` saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import math
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from audit.remote import CommandFailed, HostError, Session, Target, gather_hosts, run_sync

from .interface import Collector, CollectorError, Observation

T = TypeVar("T")
SSH_LIMIT = 16  # firewalls connected at once


def _lock_path(key: str) -> Path:
    return Path("/run/lock" if Path("/run/lock").is_dir() else "/tmp") / f"skydd-fw-{key}.lock"


@contextlib.contextmanager
def fw_lock(key: str) -> Iterator[None]:
    """Serialise readers and the traffic probe on one firewall: the probe opens a firewall or
    stops its IPS for a moment, and no collector may observe that moment as the firewall's state.
    ``flock`` on a file per firewall holds across threads and processes."""
    with open(_lock_path(key), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def firewall_lock_key(firewall_id: str) -> str:
    """The one lock of a firewall, whatever path reaches it: the traffic probe, which opens the
    firewall or stops its IPS for a moment, and every collector reading it take this same lock."""
    return f"fw-{firewall_id}"


@contextlib.asynccontextmanager
async def host_lock(key: str) -> AsyncIterator[None]:
    """``fw_lock`` for the event loop: polls the same ``flock`` so waiting never blocks other
    hosts and a cancelled wait leaves nothing locked."""
    with open(_lock_path(key), "a") as f:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run(*cmd: str, timeout: float = 20, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command on this machine; a missing tool is a ``CollectorError``."""
    if shutil.which(cmd[0]) is None:
        raise CollectorError(f"{cmd[0]} is not installed (Debian package: "
                             f"{_PACKAGES.get(cmd[0], cmd[0])}; run 'make deps')")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise CollectorError(f"{' '.join(cmd)}: no answer within {timeout:g} s") from err
    if check and proc.returncode != 0:
        raise CollectorError(f"{' '.join(cmd)}: {(proc.stderr or proc.stdout).strip()[:300]}")
    return proc


_PACKAGES = {"nft": "nftables", "iptables-save": "iptables", "suricata": "suricata",
             "ip": "iproute2"}


def ruleset() -> list[dict[str, Any]]:
    return parse_ruleset(run("nft", "-j", "list", "ruleset").stdout)


def parse_ruleset(out: str) -> list[dict[str, Any]]:
    """The items of ``nft -j list ruleset`` (an empty answer is an empty ruleset)."""
    try:
        doc = json.loads(out) if out.strip() else {"nftables": []}
    except json.JSONDecodeError as err:
        raise CollectorError(f"nft -j list ruleset: not JSON: {err}") from err
    items = doc.get("nftables")
    if not isinstance(items, list):
        raise CollectorError("nft -j list ruleset: no 'nftables' list")
    return items


def iptables_save() -> str:
    if shutil.which("iptables-save") is None:
        return ""
    return run("iptables-save", check=False).stdout


class NftablesCollector(Collector):
    kinds = ("nftables.ruleset",)
    timeout = 150.0  # may wait for the traffic probe's hold on the firewall

    def __init__(self, source_id: str, plan: dict[str, Any], **kw: str | None) -> None:
        super().__init__(source_id, **kw)
        self.plan = plan

    def collect(self) -> Iterable[Observation]:
        with fw_lock(firewall_lock_key(self.plan["id"])):
            forward = run("sysctl", "-n", "net.ipv4.ip_forward", check=False).stdout.strip()
            nft, saved = ruleset(), iptables_save()
        yield Observation(self.kinds[0], self.source_id, observed(self.plan, forward, nft, saved))


def observed(plan: dict[str, Any], forward: str, nft: list[dict[str, Any]], saved: str
             ) -> dict[str, Any]:
    return {
        "firewall": plan["id"],
        "position": plan["position"],
        "plan": {k: plan[k] for k in ("flows", "management_network", "management_ports",
                                       "lan", "inside", "outside", "table")},
        "ip_forward": forward.strip() == "1",
        "nftables": nft,
        "iptables_save": saved,
    }


# -- over SSH ------------------------------------------------------------------------------------

RULESET_COMMANDS = ("cat /proc/sys/net/ipv4/ip_forward", "nft -j list ruleset", "iptables-save")


async def read_ruleset(s: Session) -> tuple[str, list[dict[str, Any]], str]:
    """ip_forward, the nft ruleset and iptables-save (empty when not installed) of one host."""
    forward, nft, saved = await s.run_many(RULESET_COMMANDS, check=False)
    if nft.exit_status != 0:
        raise CommandFailed(s.target.label, nft.command, nft.exit_status,
                            nft.stderr.decode("utf-8", "replace"))
    try:
        items = parse_ruleset(nft.text)
    except CollectorError as err:
        raise CollectorError(f"{s.target.label}: {err}") from err
    return forward.text, items, saved.text if saved.exit_status == 0 else ""


class SshFleetCollector(Collector):
    """Observe every firewall of ``targets`` over SSH at once; one ``Observation`` per firewall,
    an ``error`` one for a firewall that could not be observed. Subclasses set ``kinds`` and
    implement ``observe``."""

    per_host_steps = 5  # connect, and the commands of ``observe`` (times the host's timeout)
    wait_for_probe = 150.0  # a firewall may be held by the traffic probe this long

    def __init__(self, plans: Sequence[dict[str, Any]], targets: Sequence[Target]) -> None:
        super().__init__("ssh")
        self.plans = {p["id"]: p for p in plans}
        self.targets = list(targets)
        worst = max((t.connection.timeout for t in targets), default=10.0) * self.per_host_steps
        self.timeout = self.wait_for_probe + math.ceil(len(targets) / SSH_LIMIT) * worst + 5

    async def observe(self, s: Session, plan: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def collect(self) -> Iterable[Observation]:
        async def work(s: Session) -> dict[str, Any]:
            return await self.observe(s, self.plans[s.name])

        results = run_sync(gather_ssh(self.targets, work, self.per_host_steps))
        for name, result in results.items():
            plan = self.plans[name]
            where = {"site": plan["site"], "municipality": plan["municipality"],
                     "source": f"{self.kinds[0].split('.')[0]}:{name}"}
            if isinstance(result, BaseException):
                yield Observation(self.kinds[0], name, {}, error=str(result), **where)
            else:
                yield Observation(self.kinds[0], name, result, **where)


async def gather_ssh(targets: Sequence[Target], work: Callable[[Session], Awaitable[T]],
                     steps: int) -> dict[str, T | HostError | CollectorError]:
    """``gather_hosts`` with each firewall's lock held while it is observed; a malformed answer
    (``CollectorError``) is that host's error too."""
    async def guarded(s: Session) -> T | CollectorError:
        try:
            return await work(s)
        except CollectorError as err:
            return err

    out = await gather_hosts(targets, guarded, limit=SSH_LIMIT,
                             budget=lambda t: t.connection.timeout * steps,
                             hold=lambda t: host_lock(firewall_lock_key(t.name)))
    return out


class NftablesOverSsh(SshFleetCollector):
    kinds = ("nftables.ruleset",)

    async def observe(self, s: Session, plan: dict[str, Any]) -> dict[str, Any]:
        forward, nft, saved = await read_ruleset(s)
        return observed(plan, forward, nft, saved)


def plans(inventory: Any) -> Sequence[dict[str, Any]]:
    from estate.network_plan import firewall_plan
    return [firewall_plan(inventory, fw) for fw in inventory.firewalls]


def ssh_target(name: str, obj: Any) -> Target | None:
    """The SSH target of an inventory object with an ssh ``connection`` (else None)."""
    conn = getattr(obj, "connection", None)
    return Target(name, conn) if conn is not None and conn.type == "ssh" else None


class NoConnection(Collector):
    """A firewall the inventory gives no connection: its evidence is an error saying so."""

    kinds = ("nftables.ruleset", "suricata.ips")

    def __init__(self, kind: str, plan: dict[str, Any]) -> None:
        super().__init__(plan["id"], site=plan["site"], municipality=plan["municipality"])
        self.kind = kind

    @property
    def source(self) -> str:
        return f"{self.kind.split('.')[0]}:{self.source_id}"

    def collect(self) -> Iterable[Observation]:
        yield Observation(self.kind, self.source_id, {}, error=(
            f"firewall {self.source_id} has no connection in the inventory: give it an ssh "
            "connection (or type local when it is this machine)"))


def split_by_connection(inventory: Any, chosen: Sequence[dict[str, Any]]
                        ) -> tuple[list[dict[str, Any]], list[Target], list[dict[str, Any]],
                                   list[dict[str, Any]]]:
    """Firewall plans reached over SSH (with their targets), those that are this machine (a
    ``local`` connection) and those without a connection."""
    models = {fw.id: fw for fw in inventory.firewalls}
    over_ssh, targets, here, unreachable = [], [], [], []
    for p in chosen:
        fw = models[p["id"]]
        target = ssh_target(fw.id, fw)
        if target is not None:
            over_ssh.append(p)
            targets.append(target)
        elif fw.connection is not None:  # local: the controller itself
            here.append(p)
        else:
            unreachable.append(p)
    return over_ssh, targets, here, unreachable


def from_inventory(inventory: Any, home: Path) -> list[Collector]:
    over_ssh, targets, here, unreachable = split_by_connection(inventory, plans(inventory))
    out: list[Collector] = [NftablesCollector(p["id"], p, site=p["site"],
                                              municipality=p["municipality"]) for p in here]
    out += [NoConnection(NftablesCollector.kinds[0], p) for p in unreachable]
    if targets:
        out.append(NftablesOverSsh(over_ssh, targets))
    return out
