"""The inline IPS of each IPS firewall: Suricata's running process and its queue binding, its
configuration (NFQ mode, fail-open, eve.json), the loaded ruleset as suricata-update wrote it
(rule counts, drop rules by class, age) and the latest eve.json statistics, and the queue rules
that put it in the path (native nft ``queue`` or iptables-nft ``NFQUEUE``).

An IPS firewall with an ssh ``connection`` is observed over SSH, all of them at once (as in
``nftables``): the same facts from the same commands and files, read on the firewall; one whose
connection is ``local`` is this machine; one without a connection is an ``error``.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from audit.remote import CommandFailed, Session

from .interface import Collector, CollectorError, Observation
from .nftables import (
    NoConnection,
    SshFleetCollector,
    firewall_lock_key,
    fw_lock,
    iptables_save,
    parse_ruleset,
    plans,
    ruleset,
    run,
    split_by_connection,
)

_EVE_TAIL = 256 * 1024


def ips_dir(plan: dict[str, Any]) -> Path:
    return Path(plan.get("state_dir") or "/var/lib/skydd") / "ips"


def suricata_pids() -> list[int]:
    """Suricata processes sharing this process's network stack (all of them: an unmanaged one
    counts too), as ``PIDS_SCRIPT`` finds them on a remote firewall."""
    own = os.stat("/proc/self/ns/net").st_ino
    found = []
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            exe = Path(f"/proc/{pid}/comm").read_text().strip()
            if not (exe.startswith("Suricata") or exe == "suricata"):
                continue
            if os.stat(f"/proc/{pid}/ns/net").st_ino != own:
                continue
        except OSError:
            continue
        found.append(pid)
    return sorted(found)


def cmdline(pid: int) -> list[str]:
    try:
        return [a for a in Path(f"/proc/{pid}/cmdline").read_text().split("\0") if a]
    except OSError:
        return []


def bound_queues() -> list[dict[str, int]]:
    """``/proc/net/netfilter/nfnetlink_queue`` of this network stack: queue number and port id."""
    proc = run("cat", "/proc/net/netfilter/nfnetlink_queue", check=False)
    return parse_queues(proc.stdout)


def parse_queues(text: str) -> list[dict[str, int]]:
    out = []
    for line in text.splitlines():
        cols = line.split()
        if len(cols) >= 2 and cols[0].isdigit():
            out.append({"queue": int(cols[0]), "portid": int(cols[1])})
    return out


def queue_rules(nft: list[dict[str, Any]], iptables: str) -> list[dict[str, Any]]:
    """Every rule that hands packets to a queue, with its hook, number and bypass flag."""
    hooks = {(c["family"], c["table"], c["name"]): c.get("hook")
             for c in (i["chain"] for i in nft if "chain" in i)}
    out = []
    for item in nft:
        rule = item.get("rule")
        if not rule:
            continue
        for stmt in rule.get("expr", []):
            q = stmt.get("queue", False) if isinstance(stmt, dict) else False
            if q is not False:
                q = q if isinstance(q, dict) else {}
                flags = q.get("flags", [])
                flags = [flags] if isinstance(flags, str) else flags
                out.append({"backend": "nft", "family": rule["family"], "table": rule["table"],
                            "chain": rule["chain"],
                            "hook": hooks.get((rule["family"], rule["table"], rule["chain"])),
                            "num": q.get("num", 0), "bypass": "bypass" in flags})
    for line in iptables.splitlines():
        m = re.match(r"^-A (\S+) .*-j NFQUEUE(.*)$", line)
        if m:
            num = re.search(r"--queue-num (\d+)", m.group(2))
            out.append({"backend": "iptables", "family": "ip", "table": "filter",
                        "chain": m.group(1), "hook": m.group(1).lower(),
                        "num": int(num.group(1)) if num else 0,
                        "bypass": "--queue-bypass" in m.group(2)})
    return out


def read_config(path: Path) -> dict[str, Any]:
    return parse_config(path.read_text(encoding="utf-8"), path)


def parse_config(text: str, path: Path) -> dict[str, Any]:
    """The facts of a suricata.yaml (``path`` anchors its relative folders)."""
    text = "\n".join(line for line in text.splitlines() if not line.startswith("%YAML"))
    try:
        doc = YAML(typ="safe").load(text) or {}
    except YAMLError as err:
        raise CollectorError(f"{path}: not valid YAML: {err}") from err
    nfq = doc.get("nfq") or {}
    eve: dict[str, Any] = next((o["eve-log"] for o in doc.get("outputs") or [] if isinstance(o, dict)
                and "eve-log" in o), {})
    log_dir = Path(doc.get("default-log-dir") or path.parent)
    rules = [str(Path(doc.get("default-rule-path") or path.parent) / r)
             for r in doc.get("rule-files") or []]
    return {"path": str(path), "nfq_mode": nfq.get("mode", "accept"),
            "fail_open": _yes(nfq.get("fail-open", False)),
            "eve_enabled": _yes(eve.get("enabled", False)),
            "eve_path": str(log_dir / eve.get("filename", "eve.json")),
            "rule_files": rules}


def _yes(value: Any) -> bool:
    """Suricata's YAML 1.1 booleans (yes/no/on/off) also when read as YAML 1.2 strings."""
    return value is True or str(value).strip().lower() in ("yes", "true", "on", "1")


def read_rules(files: list[str]) -> dict[str, Any]:
    found = [(Path(f).read_text(encoding="utf-8", errors="replace"), Path(f).stat().st_mtime)
             for f in files if Path(f).exists()]
    return count_rules(files, found)


def count_rules(files: list[str], found: Sequence[tuple[str, float]]) -> dict[str, Any]:
    """Rule counts of the rule files that exist (their text and modification time)."""
    from suricata.update import rule as su_rule

    total = enabled = 0
    drops: list[dict[str, Any]] = []
    newest = None
    for text, mtime in found:
        newest = max(newest or 0, mtime)
        for r in su_rule.parse_fileobj(io.StringIO(text)):
            total += 1
            if r.enabled:
                enabled += 1
                if r.action == "drop":
                    drops.append({"sid": r.sid, "classtype": r.get("classtype"), "msg": r.msg})
    return {"files": files, "total": total, "enabled": enabled, "drop": drops,
            "updated_at": (datetime.fromtimestamp(newest, UTC).isoformat().replace("+00:00", "Z")
                           if newest else None)}


def read_eve(path: Path) -> dict[str, Any]:
    if not path.exists():
        return summarize_eve(path, None)
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - _EVE_TAIL))
        return summarize_eve(path, f.read())


def summarize_eve(path: Path, tail: bytes | None) -> dict[str, Any]:
    """The latest IPS stats and the blocked events in the tail of eve.json (None: no file)."""
    if tail is None:
        return {"path": str(path), "exists": False, "stats": None, "blocked": 0}
    lines = tail.decode("utf-8", "replace").splitlines()
    stats, blocked = None, 0
    for line in lines:
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue  # the first line of a tail may be partial
        if ev.get("event_type") == "stats":
            ips = ev.get("stats", {}).get("ips", {})
            stats = {"at": ev.get("timestamp"), "accepted": ips.get("accepted"),
                     "blocked": ips.get("blocked")}
        elif ev.get("event_type") in ("alert", "drop") and \
                (ev.get("alert") or {}).get("action") == "blocked":
            blocked += 1
    return {"path": str(path), "exists": True, "stats": stats, "blocked": blocked}


class SuricataCollector(Collector):
    kinds = ("suricata.ips",)
    timeout = 150.0  # may wait for the traffic probe's hold on the firewall

    def __init__(self, source_id: str, plan: dict[str, Any], **kw: str | None) -> None:
        super().__init__(source_id, **kw)
        self.plan = plan

    def collect(self) -> Iterable[Observation]:
        with fw_lock(firewall_lock_key(self.plan["id"])):
            data = self._observe()
        yield Observation(self.kinds[0], self.source_id, data)

    def _observe(self) -> dict[str, Any]:
        nft = ruleset()
        folder = ips_dir(self.plan)
        conf_path = folder / "suricata.yaml"
        config = read_config(conf_path) if conf_path.exists() else None
        pids = suricata_pids()
        procs = [{"pid": p, "cmdline": cmdline(p)} for p in pids]
        return {
            "firewall": self.source_id,
            "declared_fail_mode": self.plan["fail_mode"],
            "protects_classified": self.plan["protects_classified"],
            "installed": shutil.which("suricata") is not None,
            "configured": config is not None,
            "config": config,
            "processes": procs,
            "running": bool(procs),
            "bound_queues": bound_queues(),
            "queue_rules": queue_rules(nft, iptables_save()),
            "rules": read_rules(config["rule_files"]) if config else None,
            "eve": read_eve(Path(config["eve_path"])) if config else None,
        }


# -- over SSH ------------------------------------------------------------------------------------

# Suricata processes that share the shell's network stack, as "pid<TAB>argv" with arguments
# separated by \x1f (a host may share /proc with others, e.g. containers). Builtins only per
# process (``read`` for comm, ``test -ef`` for the net ns inode): no fork per process, one ``tr``
# per Suricata found.
PIDS_SCRIPT = (
    'for d in /proc/[0-9]*; do '
    'read -r c 2>/dev/null < "$d/comm" || continue; '
    'case "$c" in Suricata*|suricata) ;; *) continue ;; esac; '
    '[ "$d/ns/net" -ef /proc/self/ns/net ] 2>/dev/null || continue; '
    'printf "%s\\t" "${d#/proc/}"; tr "\\000" "\\037" < "$d/cmdline"; echo; done')

# The scan as it was before (a ``cat`` and a ``readlink`` per process): the bench's comparison.
PIDS_SCRIPT_FORKING = (
    'me=$(readlink /proc/self/ns/net); for d in /proc/[0-9]*; do '
    'c=$(cat "$d/comm" 2>/dev/null) || continue; '
    'case "$c" in Suricata*|suricata) ;; *) continue ;; esac; '
    '[ "$(readlink "$d/ns/net" 2>/dev/null)" = "$me" ] || continue; '
    'printf "%s\\t" "${d#/proc/}"; tr "\\000" "\\037" < "$d/cmdline"; echo; done')


def parse_pids(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        pid, _, argv = line.partition("\t")
        if pid.isdigit():
            out.append({"pid": int(pid), "cmdline": [a for a in argv.split("\x1f") if a]})
    return sorted(out, key=lambda p: p["pid"])


async def observe_over_ssh(s: Session, plan: dict[str, Any]) -> dict[str, Any]:
    conf_path = ips_dir(plan) / "suricata.yaml"
    nft, saved, which, queues, pids, conf = await s.run_many([
        "nft -j list ruleset", "iptables-save", "command -v suricata",
        "cat /proc/net/netfilter/nfnetlink_queue", PIDS_SCRIPT,
        f"cat -- {shlex.quote(str(conf_path))}"], check=False)
    if nft.exit_status != 0:
        raise CommandFailed(s.target.label, nft.command, nft.exit_status,
                            nft.stderr.decode("utf-8", "replace"))
    items = parse_ruleset(nft.text)
    config = parse_config(conf.text, conf_path) if conf.exit_status == 0 else None
    rules = eve = None
    if config is not None:
        # The rule files and eve.json's tail in one round trip (they follow from the config).
        files, eve_path = config["rule_files"], config["eve_path"]
        q = shlex.quote(eve_path)
        *reads, tail = await s.run_many(
            [f"stat -c %Y -- {shlex.quote(f)} && cat -- {shlex.quote(f)}" for f in files]
            + [f"if [ -e {q} ]; then tail -c {_EVE_TAIL} -- {q}; else exit 3; fi"], check=False)
        found = []
        for r in reads:
            if r.exit_status == 0:
                stamp, _, text = r.text.partition("\n")
                found.append((text, float(stamp)))
        rules = count_rules(files, found)
        if tail.exit_status not in (0, 3) or (tail.exit_status == 3 and tail.stdout):
            raise CommandFailed(s.target.label, f"read {eve_path}", tail.exit_status,
                                tail.stderr.decode("utf-8", "replace"))
        eve = summarize_eve(Path(eve_path), tail.stdout if tail.exit_status == 0 else None)
    procs = parse_pids(pids.text)
    return {
        "firewall": plan["id"],
        "declared_fail_mode": plan["fail_mode"],
        "protects_classified": plan["protects_classified"],
        "installed": which.exit_status == 0,
        "configured": config is not None,
        "config": config,
        "processes": procs,
        "running": bool(procs),
        "bound_queues": parse_queues(queues.text),
        "queue_rules": queue_rules(items, saved.text if saved.exit_status == 0 else ""),
        "rules": rules,
        "eve": eve,
    }


class SuricataOverSsh(SshFleetCollector):
    kinds = ("suricata.ips",)
    per_host_steps = 10  # connect, the facts, the rule files, eve.json

    async def observe(self, s: Session, plan: dict[str, Any]) -> dict[str, Any]:
        return await observe_over_ssh(s, plan)


def from_inventory(inventory: Any, home: Path) -> list[Collector]:
    over_ssh, targets, here, unreachable = split_by_connection(
        inventory, [p for p in plans(inventory) if p["ips"]])
    out: list[Collector] = [SuricataCollector(p["id"], p, site=p["site"],
                                              municipality=p["municipality"]) for p in here]
    out += [NoConnection(SuricataCollector.kinds[0], p) for p in unreachable]
    if targets:
        out.append(SuricataOverSsh(over_ssh, targets))
    return out
