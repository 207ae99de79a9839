"""Report rendering and history at scale: 10,000 findings of a real control (290 municipalities),
a third of them failing, some waived; signed, then rendered as HTML, JUnit and OSCAL, recorded
in a SQLite history and compared with the previous audit. Figures only, no targets."""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from audit.history import History, drift
from audit.reports import build_oscal, render_html, render_junit
from audit.reports.json_report import build_report, sign_report
from audit.signing import load_signer
from policies import Evidence, Waiver, evaluate, load_catalog

FINDINGS = 10_000
MUNICIPALITIES = 290
AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _report(catalog, signer, at: datetime, failing_every: int) -> dict:
    control = catalog.by_id()["d.key-files-private"]
    evidence = []
    for i in range(FINDINGS):
        m = f"m{i % MUNICIPALITIES}"
        mode = "0644" if i % failing_every == 0 else "0600"
        data = {"path": "/srv/pki", "files": [
            {"path": "/srv/pki/ca.key", "type": "file", "mode": mode, "uid": 0, "gid": 0}]}
        evidence.append(Evidence.observed("files.keystore", f"{m}-store{i}", f"files:{m}", at,
                                          data, site=m, municipality=m))
    waivers = [Waiver(f"w{i}", control.id, f"m{i % MUNICIPALITIES}-store{i}", "bench", "alice",
                      at - timedelta(days=1), at + timedelta(days=30), "bob", at)
               for i in range(0, FINDINGS, failing_every * 10)]
    findings = evaluate([control], evidence, waivers, at)
    report = build_report(findings, at=at, inventory={"name": "bench", "digest": "sha256:0"},
                          catalog={"version": catalog.version, "digest": catalog.digest})
    return sign_report(report, signer)


def _timed(label: str, fn):
    start = time.perf_counter()
    out = fn()
    elapsed = time.perf_counter() - start
    size = f", {len(out) / 1e6:.1f} MB" if isinstance(out, (str, bytes)) else ""
    print(f"   {label:<34} {elapsed:6.2f} s  ({FINDINGS / elapsed:,.0f} findings/s{size})")
    return out


def main() -> None:
    catalog = load_catalog()
    with tempfile.TemporaryDirectory() as tmp:
        signer = load_signer(Path(tmp) / "home")
        first = _report(catalog, signer, AT, 3)
        _timed("HTML", lambda: render_html(first, catalog))
        _timed("JUnit", lambda: render_junit(first))
        _timed("OSCAL build (trestle models)", lambda: build_oscal(first))
        model = build_oscal(first)
        _timed("OSCAL serialise", lambda: model.oscal_serialize_json_bytes(pretty=True))
        history = History(f"sqlite:///{Path(tmp) / 'history.db'}")
        _timed("history record", lambda: history.record(first))
        second = _report(catalog, signer, AT + timedelta(days=1), 4)
        d = _timed("history previous + drift",
                   lambda: drift(history.previous("bench"), second["findings"]))
        print(f"   drift: {len(d['newly_failing'])} newly failing, {len(d['newly_fixed'])} newly fixed")
        history.close()
