"""The SSH estate: what level b's collection costs as the estate grows (issue 11, item 9).

N real hosts (N = 1, 10, 30), each a network namespace of the bench's own (``skb-*``, on
203.0.113.0/24, TEST-NET-3) with Debian's sshd and nftables, built by ``tests.lab.ssh_hosts``.
Each host loads the rule set the ``nftables_firewall`` role renders for a lab firewall plan
(torsby-fw1 / torsby-fw2 alternately, with the lab's flow and a municipality's worth of extra
declared flows); every second host is an IPS firewall with the ``suricata_ips`` role's
suricata.yaml, the shipped baseline rules and an eve.json. The inventory holds N firewalls with
ssh connections (pinned ed25519 host keys, key login), and the audit's own path runs:
``collectors_for`` (the level-b controls judged on ``nftables.ruleset`` and ``suricata.ips``;
the traffic and path proofs need the lab's topology and are not part of this case),
``run_collectors`` and the engine's ``evaluate``. Printed: wall time per N (median of runs),
the controller's CPU time, SSH connections sshd accepted, the ratio time(N)/time(1), then the
levers: the connection limit and the key exchange / cipher choices of asyncssh.

Needs root, ``/usr/sbin/sshd`` and ``nft``; otherwise it says so and returns. Every sshd it
started is stopped and every namespace it made is deleted in a ``finally``, also on Ctrl-C or
SIGTERM. Figures are printed, never asserted.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SIZES = (1, 10, 30)
RUNS = 3
NET = "203.0.113"  # TEST-NET-3: neither the tests' 198.51.100 nor the lab's 10/8
EXTRA_FLOWS = 24  # declared flows per firewall besides the lab's one
KINDS = ("nftables.ruleset", "suricata.ips")
GOAL_SECONDS = 10.0
ROOT = Path(__file__).resolve().parents[2]
ROLES = ROOT / "playbooks" / "roles"


# -- the hosts' contents ---------------------------------------------------------------------------

def _render(template: Path, **variables: Any) -> str:
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True)
    return env.from_string(template.read_text()).render(**variables)


def lab_plans() -> dict[int, dict[str, Any]]:
    """The lab's torsby-fw1 and torsby-fw2 plans (by position), with extra declared flows."""
    from estate.loader import load_inventory
    from estate.network_plan import firewall_plan
    from skydd.lab import LAB_INVENTORY

    inv, _ = load_inventory(LAB_INVENTORY, home=Path("/nonexistent-skydd-home"))
    out = {}
    for fw in inv.firewalls:
        if fw.municipality == "torsby" and fw.position not in out:
            plan = firewall_plan(inv, fw)
            extra = [{"id": f"flow-{k}", "saddr": f"10.1.{1 + k % 8}.0/24",
                      "daddr": f"10.0.{10 + k % 5}.{k}/32", "protocol": "udp" if k % 6 == 5 else "tcp",
                      "port": 1000 + 17 * k, "inbound": k % 4 == 3} for k in range(EXTRA_FLOWS)]
            # The controller manages the hosts from the bench's network: the management-only
            # input rule must let it in, as level b's rule governs Skydd itself.
            out[fw.position] = {**plan, "flows": plan["flows"] + extra,
                                "management_network": f"{NET}.0/24"}
    return out


def ruleset(plan: dict[str, Any]) -> str:
    """The nftables_firewall role's rule set for ``plan`` (and the IPS queue table for fw2)."""
    role = ROLES / "nftables_firewall" / "templates" / f"fw{plan['position']}.nft.j2"
    text = _render(role, nftables_firewall_plan=plan, nftables_firewall_default_deny=True,
                   nftables_firewall_declared_flows=True, nftables_firewall_management=True,
                   nftables_firewall_logging=True, nftables_firewall_log_group=1)
    return text.replace(f"table inet {plan['table']}\ndelete table inet {plan['table']}\n", "", 1)


def queue_table(plan: dict[str, Any]) -> str:
    text = _render(ROLES / "suricata_ips" / "templates" / "queue.nft.j2", suricata_ips_plan=plan,
                   suricata_ips_repeat_mark=1, suricata_ips_queue_num=0, suricata_ips_fail_mode="closed")
    return text.replace("table inet skydd_ips\ndelete table inet skydd_ips\n", "", 1)


def install_ips(plan: dict[str, Any], state_dir: Path) -> None:
    """suricata.yaml as the suricata_ips role writes it, the shipped rules, an eve.json."""
    folder = state_dir / "ips"
    (folder / "rules").mkdir(parents=True)
    (folder / "log").mkdir()
    (folder / "suricata.yaml").write_text(_render(
        ROLES / "suricata_ips" / "templates" / "suricata.yaml.j2", suricata_ips_plan=plan,
        suricata_ips_queue_num=0, suricata_ips_fail_mode="closed", suricata_ips_home_net="[10.0.0.0/8]",
        suricata_ips_dir=str(folder), suricata_ips_repeat_mark=1))
    shutil.copy(ROOT / "playbooks" / "files" / "suricata" / "skydd-baseline.rules",
                folder / "rules" / "suricata.rules")
    stats = ('{"timestamp":"2025-01-01T00:00:%02dZ","event_type":"stats",'
             '"stats":{"ips":{"accepted":%d,"blocked":%d}}}\n')
    alert = '{"event_type":"alert","alert":{"action":"blocked","signature_id":9100001}}\n'
    (folder / "log" / "eve.json").write_text("".join(stats % (s % 60, 40 * s, s) + alert * (s % 3)
                                                     for s in range(2000)))


# -- the estate ----------------------------------------------------------------------------------

@contextmanager
def terminated_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the ``finally`` that removes the hosts runs."""
    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def build(hosts: Any, count: int, plans: dict[int, dict[str, Any]], root: Path) -> list[Any]:
    """``count`` firewalls: host i plays fw1 (even i) or the IPS fw2 (odd i)."""
    from estate.inventory import Firewall

    firewalls = []
    for i in range(count):
        position = 1 + i % 2
        name = f"bench-fw{i:02d}"
        host = hosts.add(name)
        state_dir = root / "state" / name
        state_dir.mkdir(parents=True)
        plan = {**plans[position], "id": name}
        host.ns("nft", "-f", "-", input=ruleset(plan))
        if position == 2:
            try:
                host.ns("nft", "-f", "-", input=queue_table(plan))
            except Exception:
                pass
            install_ips(plan, state_dir)
        firewalls.append(Firewall(id=name, municipality="torsby", site="torsby", position=position,
                                  ips=position == 2, state_dir=str(state_dir),
                                  connection=hosts.connection(host, timeout=10.0)))
    return firewalls


def inventory(firewalls: Sequence[Any]) -> Any:
    from estate.inventory import Inventory, Municipality, Site

    return Inventory(name="ssh-estate-bench", municipalities=[Municipality(id="torsby", name="Torsby")],
                     sites=[Site(id="torsby", name="Torsby", municipality="torsby")],
                     firewalls=list(firewalls))


# -- one audit of level b ------------------------------------------------------------------------

def audit_level_b(inv: Any, home: Path) -> dict[str, Any]:
    """The audit's collection and judgement of level b's nftables and Suricata controls."""
    from audit.collectors import collectors_for, run_collectors
    from policies import Level, evaluate, load_catalog

    controls = [c for c in load_catalog().controls
                if c.level == Level.B and c.applies_to.evidence in KINDS]
    wall, cpu = time.perf_counter(), time.process_time()
    collectors = collectors_for(inv, home, {c.applies_to.evidence for c in controls})
    evidence = run_collectors(collectors)
    collected = time.perf_counter() - wall
    findings = evaluate(controls, evidence, [], datetime.now(UTC))
    return {"collect": collected, "wall": time.perf_counter() - wall,
            "cpu": time.process_time() - cpu, "evidence": len(evidence),
            "errors": [e.error for e in evidence if e.error],
            "findings": len(findings),
            "status": sorted({str(getattr(f.status, "value", f.status)) for f in findings})}


def logins(hosts: Sequence[Any]) -> int:
    return sum(h.accepted_logins() for h in hosts)


def remote_cpu(hosts: Sequence[Any]) -> float:
    """CPU seconds the hosts' side spent (each sshd's reaped children: the per-connection sshd,
    the shell and the commands), read from the sshd's /proc stat (cutime + cstime)."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0
    for h in hosts:
        try:
            fields = Path(f"/proc/{h.proc.pid}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[13]) + int(fields[14])
        except (OSError, AttributeError, IndexError, ValueError):
            continue
    return total / tick


def measure(firewalls: Sequence[Any], hosts: Sequence[Any], home: Path, runs: int = RUNS
            ) -> dict[str, Any]:
    inv = inventory(firewalls)
    results = []
    for _ in range(runs):
        before, spent = logins(hosts), remote_cpu(hosts)
        r = audit_level_b(inv, home)
        time.sleep(0.05)  # sshd writes its log line and reaps from its own process
        r["connections"] = logins(hosts) - before
        r["remote_cpu"] = remote_cpu(hosts) - spent
        results.append(r)
    walls = [r["wall"] for r in results]
    out = dict(results[walls.index(statistics.median(walls))] if runs % 2 else results[0])
    out.update(median=statistics.median(walls), best=min(walls), worst=max(walls),
               cpu=statistics.median(r["cpu"] for r in results),
               remote_cpu=statistics.median(r["remote_cpu"] for r in results))
    return out


# -- levers --------------------------------------------------------------------------------------

def with_limit(limit: int, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``run`` with the collectors' connection limit set to ``limit`` (module constant)."""
    from audit.collectors import nftables

    saved = nftables.SSH_LIMIT
    nftables.SSH_LIMIT = limit
    try:
        return run()
    finally:
        nftables.SSH_LIMIT = saved


@contextmanager
def forking_pid_scan() -> Iterator[None]:
    """The Suricata collector's process scan as it was (a ``cat`` and a ``readlink`` subshell per
    process) instead of today's builtins-only scan: same output, the comparison for the lever."""
    from audit.collectors import suricata

    saved = suricata.PIDS_SCRIPT
    suricata.PIDS_SCRIPT = suricata.PIDS_SCRIPT_FORKING
    try:
        yield
    finally:
        suricata.PIDS_SCRIPT = saved


async def _connect_all(targets: Sequence[Any], options: dict[str, Any], limit: int) -> float:
    """Connect to every target with the transport's pinned key settings plus ``options``,
    run one command, close; returns the wall time."""
    import asyncssh

    from audit.remote.ssh import _credentials

    gate = asyncio.Semaphore(limit)

    async def one(t: Any) -> None:
        key, known = _credentials(t)
        c = t.connection
        async with gate, asyncssh.connect(c.address, c.port, username=c.user, client_keys=[key],
                                    known_hosts=known, config=None, agent_path=None,
                                    preferred_auth="publickey", **options) as conn:
            await conn.run("nft -j list ruleset", check=True)

    start = time.perf_counter()
    await asyncio.gather(*(one(t) for t in targets))
    return time.perf_counter() - start


CHOICES: dict[str, dict[str, Any]] = {
    "asyncssh defaults (as the transport)": {},
    "kex curve25519, aes128-gcm, no compression": {
        "kex_algs": ["curve25519-sha256"], "encryption_algs": ["aes128-gcm@openssh.com"],
        "compression_algs": ["none"], "server_host_key_algs": ["ssh-ed25519"]},
    "kex curve25519, chacha20-poly1305": {
        "kex_algs": ["curve25519-sha256"], "encryption_algs": ["chacha20-poly1305@openssh.com"],
        "compression_algs": ["none"], "server_host_key_algs": ["ssh-ed25519"]},
    "kex ecdh-nistp256, aes128-gcm": {
        "kex_algs": ["ecdh-sha2-nistp256"], "encryption_algs": ["aes128-gcm@openssh.com"],
        "compression_algs": ["none"], "server_host_key_algs": ["ssh-ed25519"]},
}


def handshake_costs(firewalls: Sequence[Any]) -> list[tuple[str, float, float]]:
    """Per algorithm choice: wall and controller CPU to connect to all hosts, run one command."""
    from audit.collectors.nftables import ssh_target

    targets = [ssh_target(fw.id, fw) for fw in firewalls]
    out = []
    for label, options in CHOICES.items():
        walls, cpus = [], []
        for _ in range(1):
            cpu = time.process_time()
            walls.append(asyncio.run(_connect_all(targets, options, 16)))
            cpus.append(time.process_time() - cpu)
        out.append((label, statistics.median(walls), statistics.median(cpus)))
    return out


# -- main ----------------------------------------------------------------------------------------

def main() -> None:
    missing = [w for w, ok in (("root", os.geteuid() == 0), ("/usr/sbin/sshd", Path("/usr/sbin/sshd").exists()),
                               ("nft", shutil.which("nft") is not None)) if not ok]
    if missing:
        print(f"   skipped: needs {', '.join(missing)}")
        return
    from tests.lab.ssh_hosts import Hosts

    print(f"   load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory(prefix="skydd-bench-ssh-") as tmp, terminated_as_interrupt():
        root = Path(tmp)
        (root / "keys").mkdir()
        hosts = Hosts(root / "keys", prefix="skb", net=NET, first=0)
        try:
            start = time.perf_counter()
            firewalls = build(hosts, max(SIZES), lab_plans(), root)
            print(f"   {len(firewalls)} hosts with sshd and nftables up in "
                  f"{time.perf_counter() - start:.1f} s (not counted)")
            report(hosts, firewalls, root / "home")
        finally:
            hosts.close()
            remove_lock_files(max(SIZES))
    print(f"   load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def remove_lock_files(count: int) -> None:
    """The per-firewall lock files the collectors made for the bench's firewall names."""
    from audit.collectors.nftables import _lock_path, firewall_lock_key

    for i in range(count):
        _lock_path(firewall_lock_key(f"bench-fw{i:02d}")).unlink(missing_ok=True)


def report(hosts: Any, firewalls: Sequence[Any], home: Path) -> None:
    home.mkdir()
    warm = measure(firewalls[:1], hosts.hosts[:1], home, runs=1)  # imports and caches
    if warm["errors"]:
        print(f"   stopped: the first host is not collected: {warm['errors'][0]}")
        return
    rows = {n: measure(firewalls[:n], hosts.hosts[:n], home) for n in SIZES}
    base = rows[SIZES[0]]["median"]
    print(f"   level b over SSH (nftables + Suricata collectors, {RUNS} runs, median wall)")
    print("   (cpu s: the controller's process; host cpu s: all sshd sides together, which here share")
    print("   the controller's cores and on a real estate run on each firewall's own CPU)")
    print(f"   {'N':>3} {'wall s':>7} {'min-max s':>11} {'collect s':>9} {'cpu s':>6} {'host cpu s':>10} "
          f"{'conns':>5} {'evidence':>8} {'errors':>6} {'t(N)/t(1)':>9}")
    for n, r in rows.items():
        print(f"   {n:>3} {r['median']:>7.2f} {r['best']:>5.2f}-{r['worst']:<5.2f} {r['collect']:>9.2f} "
              f"{r['cpu']:>6.2f} {r['remote_cpu']:>10.2f} {r['connections']:>5} {r['evidence']:>8} "
              f"{len(r['errors']):>6} {r['median'] / base:>9.2f}")
    for n, r in rows.items():
        for e in r["errors"][:3]:
            print(f"   N={n} error: {e}")
    n_max = max(SIZES)
    top = rows[n_max]["median"]
    growth = top / base
    print(f"   goal: {n_max} firewalls < {GOAL_SECONDS:g} s: {'met' if top < GOAL_SECONDS else 'NOT met'} "
          f"({top:.2f} s); growth far slower than N: t({n_max})/t(1) = {growth:.1f} for "
          f"N x{n_max} ({'met' if growth < n_max / 3 else 'NOT met'})")
    print(f"   findings per run at N={n_max}: {rows[n_max]['findings']} "
          f"(statuses {', '.join(rows[n_max]['status'])})")

    print(f"   lever: connection limit (audit.collectors.nftables.SSH_LIMIT), N={n_max}")
    for limit in (4, 32):
        r = with_limit(limit, lambda: measure(firewalls, hosts.hosts, home, runs=1))
        print(f"     limit {limit:>2}: {r['median']:.2f} s (cpu {r['cpu']:.2f} s, "
              f"host cpu {r['remote_cpu']:.2f} s; limit 16 above)")

    with forking_pid_scan():
        r = measure(firewalls, hosts.hosts, home)
    print(f"   lever: Suricata's process scan with a fork per process (before), N={n_max}: "
          f"{r['median']:.2f} s (host cpu {r['remote_cpu']:.2f} s, {r['connections']} conns, "
          f"{len(r['errors'])} errors)")
    print(f"   lever: key exchange and cipher, N={n_max} connect + one command each, limit 16")
    for label, wall, cpu in handshake_costs(firewalls):
        print(f"     {label:<44} {wall:.2f} s wall, {cpu:.2f} s controller cpu "
              f"({1000 * cpu / len(firewalls):.0f} ms/host)")
