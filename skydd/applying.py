"""One apply: select controls, plan their playbooks and tags, run them through ansible-runner in
a private run folder, log the outcome, then audit what was touched.

``plan`` is pure; ``run_apply`` does the I/O. Progress reaches the caller as ``ApplyEvent``s while
Ansible's events arrive.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from audit import log
from audit.signing import load_signer
from estate.errors import InputError, SkyddError
from estate.loader import load_inventory
from estate.settings import PLAYBOOKS_DIR, Settings
from policies import Control, Level, load_catalog

from . import ansible_inventory
from .auditing import AuditResult, Selection, run_audit


class ApplyError(SkyddError):
    """The apply could not run: the catalog names a missing playbook, or Ansible is missing."""


@dataclass(frozen=True)
class PlaybookRun:
    """One ``ansible-playbook`` invocation: a playbook under ``playbooks/`` and its tags."""

    playbook: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    controls: tuple[Control, ...]  # applied
    manual: tuple[Control, ...]  # no automatic remediation: listed, skipped
    disruptive: tuple[Control, ...]  # skipped: need --allow-disruptive
    runs: tuple[PlaybookRun, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"controls": [c.id for c in self.controls],
                "manual": [c.id for c in self.manual],
                "skipped_disruptive": [c.id for c in self.disruptive],
                "runs": [{"playbook": r.playbook, "tags": list(r.tags)} for r in self.runs]}


@dataclass(frozen=True)
class ApplyOptions:
    check: bool = False
    diff: bool = False
    allow_disruptive: bool = False


@dataclass(frozen=True)
class ApplyEvent:
    """What the caller shows as progress.

    ``kind``: ``playbook`` (a playbook starts), ``play``, ``task``, or a host result ``ok``,
    ``changed``, ``failed``, ``unreachable``, ``skipped``.
    """

    kind: str
    playbook: str
    task: str = ""
    host: str = ""
    message: str = ""
    diffs: tuple[Mapping[str, Any], ...] = ()


@dataclass
class HostStats:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"ok": self.ok, "changed": self.changed, "failed": self.failed,
                "unreachable": self.unreachable, "skipped": self.skipped}


@dataclass
class ApplyResult:
    plan: Plan
    run_dir: Path
    check: bool
    hosts: dict[str, HostStats] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # one line each: host, task, message
    not_run: list[str] = field(default_factory=list)  # playbooks skipped after a failure
    tasks: list[str] = field(default_factory=list)  # names of the tasks that started
    # applied controls none of whose tasks ("<control id> | ...") started: no host matched,
    # or the playbook has no task tagged with the control
    untouched: list[str] = field(default_factory=list)
    audit: AuditResult | None = None
    audit_error: str | None = None

    @property
    def exit_code(self) -> int:
        return 1 if self.problems else 0

    def totals(self) -> HostStats:
        t = HostStats()
        for s in self.hosts.values():
            for k, v in s.as_dict().items():
                setattr(t, k, getattr(t, k) + v)
        return t


def plan(controls: Sequence[Control], selection: Selection, *,
         allow_disruptive: bool = False) -> Plan:
    """Which controls run, which are skipped, and the tags per playbook (pure).

    Tags are the controls' remediation tags; when whole levels are selected (no ``--control``)
    and nothing of a level was skipped as disruptive, the level letter is added too, so tasks a
    level shares among its controls run as well.
    """
    manual = tuple(c for c in controls if c.remediation is None)
    disruptive = tuple(c for c in controls if c.remediation is not None
                       and c.remediation.disruptive and not allow_disruptive)
    chosen = tuple(c for c in controls if c.remediation is not None and c not in disruptive)
    if not chosen:
        why = []
        if manual:
            why.append(f"{len(manual)} manual ({', '.join(c.id for c in manual[:5])})")
        if disruptive:
            why.append(f"{len(disruptive)} disruptive, needing --allow-disruptive "
                       f"({', '.join(c.id for c in disruptive[:5])})")
        raise InputError("nothing to apply: the selected controls are " + " and ".join(why))
    skipped_levels = {c.level for c in disruptive}
    tags: dict[str, dict[str, None]] = {}
    for c in chosen:
        assert c.remediation is not None
        book = tags.setdefault(c.remediation.playbook, {})
        book.update(dict.fromkeys(c.remediation.tags or (c.id,)))
        if not selection.controls and c.level not in skipped_levels:
            book[c.level.value] = None
    runs = tuple(PlaybookRun(p, tuple(sorted(t))) for p, t in tags.items())
    return Plan(chosen, manual, disruptive, runs)


def playbook_path(playbook: str) -> Path:
    """The playbook's absolute path, which must lie inside ``playbooks/``."""
    root = PLAYBOOKS_DIR.resolve()
    path = (root / playbook).resolve()
    if root not in path.parents or not path.is_file():
        raise ApplyError(f"playbook {playbook!r} named by the catalog is not a file in {root}")
    return path


def make_run_dir(settings: Settings, at: datetime) -> Path:
    """A new private folder ``$SKYDD_HOME/runs/<UTC timestamp>[-n]`` (0700)."""
    runs = settings.home / "runs"
    runs.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1000):
        path = runs / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            path.mkdir(mode=0o700)
            return path
        except FileExistsError:
            continue
    raise ApplyError(f"cannot make a run folder under {runs}")


def runner_env(run_dir: Path, home: Path) -> dict[str, str]:
    """Environment for ansible-runner: this venv's ``ansible-playbook`` first on PATH, and
    ``SKYDD_HOME`` absolute (Ansible runs in ``playbooks/``, where ``./.skydd`` means another
    folder)."""
    venv_bin = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    return {
        "PATH": f"{venv_bin}{os.pathsep}{path}",
        "SKYDD_HOME": str(home),
        "ANSIBLE_CONFIG": str(PLAYBOOKS_DIR / "ansible.cfg"),
        "ANSIBLE_LOCAL_TEMP": str(run_dir / "tmp"),
        "ANSIBLE_REMOTE_TEMP": str(run_dir / "tmp" / "remote"),
        "ANSIBLE_RETRY_FILES_ENABLED": "false",
        "ANSIBLE_NOCOLOR": "1",
    }


Emit = Callable[[ApplyEvent], None]


def run_apply(settings: Settings, inventory_path: Path | None, selection: Selection,
              options: ApplyOptions = ApplyOptions(), *, on_event: Emit = lambda e: None,
              audit_progress: Callable[[str, str], None] | None = None,
              actor: str = "skydd", reaudit: bool = True,
              clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> ApplyResult:
    """Apply the selected controls; never raises for a failed task (see ``problems``)."""
    import ansible_runner

    inventory_path = settings.inventory(inventory_path)
    inventory, inv_digest = load_inventory(inventory_path, home=settings.home)
    controls = selection.apply(load_catalog(), inventory)
    the_plan = plan(controls, selection, allow_disruptive=options.allow_disruptive)
    books = {r.playbook: playbook_path(r.playbook) for r in the_plan.runs}
    if not (Path(sys.executable).parent / "ansible-playbook").exists():
        raise ApplyError("ansible-playbook is not in this virtualenv: run "
                         f"'{Path(sys.executable).parent / 'pip'} install ansible ansible-runner'")
    limit = ansible_inventory.limit_for(selection.site)
    if limit and not ansible_inventory.build(inventory, run_dir=settings.home).group(limit):
        raise InputError(f"--site {selection.site}: the inventory has no hosts at this site")
    settings.ensure()
    run_dir = make_run_dir(settings, clock())
    ans_inv = ansible_inventory.build(inventory, run_dir=run_dir, home=settings.home)
    inv_file = ansible_inventory.write(ans_inv, run_dir)
    (run_dir / "tmp").mkdir(mode=0o700, exist_ok=True)
    cmdline = " ".join(x for x, on in (("--check", options.check), ("--diff", options.diff)) if on)
    result = ApplyResult(the_plan, run_dir, options.check)
    extravars = {"skydd_allow_disruptive": options.allow_disruptive,
                 "skydd_inventory_file": str(inventory_path.resolve())}
    try:
        for index, run in enumerate(the_plan.runs):
            if result.problems:
                result.not_run.append(run.playbook)
                continue
            on_event(ApplyEvent("playbook", run.playbook, message=",".join(run.tags)))
            handler = _EventHandler(run.playbook, result, on_event)
            r = ansible_runner.run(
                private_data_dir=str(run_dir), ident=f"{index + 1}-{Path(run.playbook).stem}",
                project_dir=str(PLAYBOOKS_DIR), playbook=str(books[run.playbook]),
                inventory=str(inv_file), tags=",".join(run.tags), limit=limit,
                cmdline=cmdline or None,
                extravars=extravars, envvars=runner_env(run_dir, settings.home), quiet=True,
                event_handler=handler)
            _merge_stats(result, r.stats or {})
            if r.rc != 0 and not handler.failed_hosts:
                tail = _stdout_tail(r)
                hint = " (ansible-playbook not found on PATH)" if r.rc == 127 else ""
                result.problems.append(f"{run.playbook}: ansible-playbook exited {r.rc}{hint}"
                                       + (f": {tail}" if tail else ""))
    finally:  # private keys from env: references live only as long as the runs
        ansible_inventory.remove_key_files(run_dir)
    ran = {t.split(" | ", 1)[0] for t in result.tasks}
    result.untouched = [c.id for c in the_plan.controls if c.id not in ran]
    _log(settings, actor, selection, options, result, inv_digest, limit, clock())
    if reaudit and not options.check and len(result.not_run) < len(the_plan.runs):
        touched = Selection(levels=tuple(levels_in(the_plan)),
                            controls=tuple(c.id for c in the_plan.controls), site=selection.site,
                            profile=selection.profile)
        try:
            result.audit = run_audit(settings, inventory_path, touched, progress=audit_progress,
                                     actor=actor, clock=clock)
        except SkyddError as err:
            result.audit_error = str(err)
    return result


class _EventHandler:
    """Turns ansible-runner events into ``ApplyEvent``s and remembers failures."""

    def __init__(self, playbook: str, result: ApplyResult, emit: Emit) -> None:
        self.playbook = playbook
        self.result = result
        self.emit = emit
        self.failed_hosts: set[str] = set()

    def __call__(self, event: Mapping[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind == "playbook_on_play_start":
            self.emit(ApplyEvent("play", self.playbook, message=data.get("name", "")))
        elif kind == "playbook_on_task_start":
            self.result.tasks.append(data.get("task", ""))
            self.emit(ApplyEvent("task", self.playbook, task=data.get("task", "")))
        elif kind in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable",
                      "runner_on_skipped"):
            res = data.get("res") or {}
            host, task = data.get("host", "?"), data.get("task", "")
            status = {"runner_on_failed": "failed", "runner_on_unreachable": "unreachable",
                      "runner_on_skipped": "skipped"}.get(kind, "ok")
            if kind == "runner_on_failed" and data.get("ignore_errors"):
                status = "ok"
            if status == "ok" and res.get("changed"):
                status = "changed"
            message = str(res.get("msg", "")) if status in ("failed", "unreachable") else ""
            if status in ("failed", "unreachable"):
                self.failed_hosts.add(host)
                self.result.problems.append(f"{host}: {status} at {task!r}: {message}".rstrip(": "))
            self.emit(ApplyEvent(status, self.playbook, task=task, host=host, message=message,
                                 diffs=tuple(_diffs(res))))
        return True


def _diffs(res: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    for part in [res, *(res.get("results") or [])]:
        if not isinstance(part, Mapping) or (part is not res and not part.get("changed")):
            continue
        diff = part.get("diff")
        for d in diff if isinstance(diff, list) else [diff] if diff else []:
            if isinstance(d, Mapping) and d.get("before") != d.get("after"):
                out.append(d)
    return out


def _merge_stats(result: ApplyResult, stats: Mapping[str, Mapping[str, int]]) -> None:
    fields = {"ok": "ok", "changed": "changed", "failures": "failed", "dark": "unreachable",
              "skipped": "skipped"}
    for key, attr in fields.items():
        for host, n in (stats.get(key) or {}).items():
            hs = result.hosts.setdefault(host, HostStats())
            setattr(hs, attr, getattr(hs, attr) + int(n))


def _stdout_tail(r: Any) -> str:
    try:
        lines: list[str] = [ln.strip() for ln in r.stdout.read().splitlines() if ln.strip()]
    except Exception:  # the artifact may be missing when Ansible never started
        return ""
    errors = [ln for ln in lines if "ERROR" in ln]
    return (errors or lines or [""])[-1][:300]


def _log(settings: Settings, actor: str, selection: Selection, options: ApplyOptions,
         result: ApplyResult, inv_digest: str, limit: str | None, at: datetime) -> None:
    log.append(settings.audit_log, load_signer(settings.home), "apply", actor, {
        "selection": selection.as_dict(), **result.plan.as_dict(),
        "inventory_digest": inv_digest, "limit": limit, "check": options.check,
        "diff": options.diff, "allow_disruptive": options.allow_disruptive,
        "hosts": {h: s.as_dict() for h, s in sorted(result.hosts.items())},
        "status": "failed" if result.problems else "ok", "problems": result.problems,
        "not_run": result.not_run, "untouched": result.untouched, "run_dir": str(result.run_dir)}, at=at)


def levels_in(plan_: Plan) -> list[Level]:
    return sorted({c.level for c in plan_.controls}, key=lambda lv: lv.value)
