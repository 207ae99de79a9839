"""One audit: select controls, collect evidence, evaluate, keep history, write signed reports."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from audit import log
from audit.attestations import AttestationStore
from audit.collectors import Collector, collectors_for, run_collectors
from audit.collectors.bundle import BundleCollector, write_bundle
from audit.errors import BundleError, VerificationError
from audit.history import History, HistoryError, drift
from audit.log import LogWriteError
from audit.records import Tampering, read_signed_log
from audit.reports import write_reports
from audit.reports.json_report import build_report
from audit.signing import Signer, load_signer
from estate.errors import InputError
from estate.inventory import Inventory
from estate.loader import load_inventory
from estate.settings import Settings
from policies import Catalog, Control, Level, Waiver, evaluate, exit_code, load_catalog

from .officers import Roster, load_roster
from .waivers import WaiverStore, signed_waivers


@dataclass(frozen=True)
class Selection:
    levels: tuple[Level, ...] = tuple(Level)
    controls: tuple[str, ...] = ()
    site: str | None = None
    profile: str | None = None

    @staticmethod
    def parse(levels: str | None, controls: str | None, site: str | None,
              profile: str | None = None) -> Selection:
        lv: tuple[Level, ...] = tuple(Level)
        if levels:
            try:
                lv = tuple(Level(x.strip().lower()) for x in levels.split(",") if x.strip())
            except ValueError as err:
                raise InputError(f"--level {levels!r}: levels are a, b, c, d, e") from err
            if not lv:
                raise InputError("--level is empty")
        ctl = tuple(c.strip() for c in controls.split(",") if c.strip()) if controls else ()
        return Selection(lv, ctl, site, profile)

    def apply(self, catalog: Catalog, inventory: Inventory) -> list[Control]:
        known = catalog.by_id()
        for c in self.controls:
            if c not in known:
                raise InputError(f"--control {c!r}: no such control (see 'skydd catalog list')")
        if self.site is not None and self.site not in inventory.site_ids():
            raise InputError(f"--site {self.site!r}: not a site of the inventory "
                             f"({', '.join(sorted(inventory.site_ids()))})")
        excluded: dict[str, str] = {}
        if self.profile is not None:
            if self.profile not in catalog.profiles:
                raise InputError(f"--profile {self.profile!r}: no such profile "
                                 f"(known: {', '.join(sorted(catalog.profiles)) or 'none'})")
            excluded = dict(catalog.profiles[self.profile].exclude)
        chosen = [c for c in catalog.controls if c.level in self.levels
                  and (not self.controls or c.id in self.controls) and c.id not in excluded]
        if not chosen:
            raise InputError("the selection holds no controls")
        return chosen

    def as_dict(self, catalog: Catalog | None = None) -> dict[str, object]:
        out: dict[str, object] = {"levels": [lv.value for lv in self.levels],
                                  "controls": list(self.controls), "site": self.site}
        if self.profile is not None:
            out["profile"] = self.profile
            if catalog is not None and self.profile in catalog.profiles:
                out["excluded"] = dict(catalog.profiles[self.profile].exclude)
        return out


@dataclass(frozen=True)
class AuditResult:
    report: dict[str, Any]
    out_dir: Path
    exit_code: int
    warnings: tuple[str, ...] = ()


Progress = Callable[[str, str], None]


def run_audit(settings: Settings, inventory_path: Path | None, selection: Selection, *,
              out_dir: Path | None = None, bundle: Path | None = None,
              capture: Path | None = None,
              progress: Progress | None = None, actor: str = "skydd",
              clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> AuditResult:
    inventory_path = settings.inventory(inventory_path)
    inventory, inv_digest = load_inventory(inventory_path, home=settings.home)
    catalog = load_catalog()
    controls = selection.apply(catalog, inventory)
    kinds = {c.applies_to.evidence for c in controls}
    settings.ensure()
    collectors: list[Collector]
    if bundle is not None:
        try:
            collectors = [BundleCollector(bundle)]
        except BundleError as err:
            raise InputError(str(err)) from err
    else:
        collectors = collectors_for(inventory, settings.home, kinds)
    if selection.site is not None:
        collectors = [c for c in collectors if c.site in (None, selection.site)]
    evidence = [e for e in run_collectors(collectors, clock=clock, progress=progress)
                if e.kind in kinds and (selection.site is None or e.site in (None, selection.site))]
    if capture is not None:
        try:
            write_bundle(evidence, capture, note=f"captured from {inventory.name}")
        except BundleError as err:
            raise InputError(f"--capture: {err}") from err
    at = clock()
    signer = load_signer(settings.home)
    trust = _signed_records(settings, signer, attestations="attestation" in kinds and bundle is None,
                            roster=load_roster(inventory, inventory_path, strict=False))
    findings = evaluate(controls, evidence, trust.waivers, at)
    warnings: list[str] = []
    history: History | None = None
    previous = None
    try:
        history = History(settings.history_url)
        previous = history.previous(inventory.name)
    except HistoryError as err:
        # The findings stand without history; only "what changed" is lost, and the report says so.
        warnings.append(f"drift not computed: {err}")
    report = build_report(findings, at=at,
                          inventory={"name": inventory.name, "digest": inv_digest},
                          catalog={"version": catalog.version, "digest": catalog.digest},
                          selection=selection.as_dict(catalog),
                          tampering=[t.to_dict() for t in trust.tampering])
    report["drift"] = drift(previous, report["findings"])
    if warnings:
        report["drift"]["unavailable"] = warnings[0]
    final = out_dir or settings.reports / f"{at:%Y%m%dT%H%M%SZ}-{report['id'][:8]}"
    _check_out(final)  # before the log records this audit
    witness: list[str] = []  # a witness that is unreachable or refuses the log: said, never silent
    anchor, unanchored = _anchor(settings, signer, report, selection, actor, witness.append)
    if anchor is not None:
        report["log"] = anchor
    _write_atomically(final, lambda d: write_reports(report, d, signer, catalog))
    if history is not None:
        try:
            if not warnings:
                history.record(report)
        except HistoryError as err:
            warnings.append(f"audit not kept in history: {err}")
        finally:
            history.close()
    code = exit_code(report["summary"])
    if unanchored is None:  # a log that refused the first entry is already named below
        log.append(settings.audit_log, signer, "audit", actor,
                   {"report": report["id"], "status": report["summary"]["status"],
                    "out": str(final), "selection": selection.as_dict()}, warn=witness.append)
    _point_latest(settings.reports, final)
    trust_warnings = [t.line() for t in trust.tampering] + list(trust.notes)
    if unanchored is not None:
        trust_warnings.append(unanchored)
    trust_warnings += list(dict.fromkeys(witness))  # the same refusal after each entry: once
    return AuditResult(report, final, code, tuple(trust_warnings + warnings))


@dataclass(frozen=True)
class SignedRecords:
    """What the signed audit log lets count, and what disagreed with it."""

    waivers: tuple[Waiver, ...]
    tampering: tuple[Tampering, ...]
    notes: tuple[str, ...]  # signed waivers that do not count (beyond the lifetime …)


def _signed_records(settings: Settings, signer: Signer, *, attestations: bool,
                    roster: Roster | None = None) -> SignedRecords:
    """Waivers from the verified log; ``waivers.json`` and the attestation store checked against
    it. A log that does not verify lets nothing count and is itself reported."""
    signed = read_signed_log(settings.audit_log, signer.public_key)
    ledger = signed_waivers(signed, settings.waiver_max_days, roster)
    tampering = [*signed.tampering(), *ledger.tampering(WaiverStore(settings.home))]
    if attestations:
        tampering += AttestationStore(settings.home).tampering(signer.public_key, signed)
    return SignedRecords(tuple(ledger.counting()), tuple(tampering), tuple(ledger.notes()))


def _anchor(settings: Settings, signer: Signer, report: dict[str, Any], selection: Selection,
            actor: str, warn: Callable[[str], None] | None = None
            ) -> tuple[dict[str, Any] | None, str | None]:
    """Log the audit's start (an ``audit.run`` entry, then a signed checkpoint) and return that
    signed state of the log as the report's anchor, so ``skydd log verify --anchor report.json``
    detects a later rollback. The entry is written even on a fresh home, so every report from
    an intact log carries an anchor; when the log refuses it (an unsigned tail, a log that does
    not verify), the report carries none and the reason is returned. The checkpoint also goes
    to the witness when one is configured; ``warn`` hears when it is unreachable or refuses."""
    try:
        log.append(settings.audit_log, signer, "audit.run", actor,
                   {"report": report["id"], "inventory": report["inventory"]["name"],
                    "selection": selection.as_dict()}, warn=warn)
        anchor = log.latest_anchor(settings.audit_log, signer.public_key)
    except (LogWriteError, VerificationError, OSError) as err:
        return None, f"report not anchored in the audit log: {err}"
    if anchor is None:  # pragma: no cover - an append always ends in a checkpoint
        return None, "report not anchored in the audit log: it holds no signed checkpoint"
    return anchor.to_dict(), None


def _check_out(final: Path) -> None:
    if final.exists() and (not final.is_dir() or any(final.iterdir())):
        raise InputError(f"--out {final}: folder exists and is not empty")


def _write_atomically(final: Path, write: Callable[[Path], object]) -> None:
    """Write every report file in a sibling folder, then rename it into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    _check_out(final)
    tmp = final.with_name(f".{final.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        if final.exists():
            final.rmdir()
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _point_latest(reports: Path, final: Path) -> None:
    if final.parent != reports:
        return
    link = reports / "latest"
    tmp = reports / f".latest.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(final.name)
    tmp.replace(link)
