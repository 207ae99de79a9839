"""Audit history on SQLite (PostgreSQL: tests/lab/test_history_postgres.py) and drift."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from audit.history import History, HistoryError, drift
from estate.canonical import rfc3339
from estate.settings import Settings
from policies import Evidence
from skydd.auditing import Selection, run_audit

AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _report(rid: str, at: datetime | str, statuses: dict[str, str], inventory: str = "lab") -> dict:
    findings = [{"control": k.split("|")[0], "target": k.split("|")[1], "status": s}
                for k, s in statuses.items()]
    return {"id": rid, "inventory": {"name": inventory, "digest": "sha256:0"},
            "generated_at": at if isinstance(at, str) else rfc3339(at),
            "summary": {"status": "noncompliant"}, "findings": findings}


def test_drift_across_two_audits(tmp_path: Path) -> None:
    history = History(f"sqlite:///{tmp_path / 'home' / 'history.db'}")
    assert history.previous("lab") is None
    first = _report("one", AT, {"b.x|fw1": "pass", "b.x|fw2": "fail", "d.y|kc": "error",
                                "d.z|kc": "fail", "e.t|alice": "pass"})
    assert drift(history.previous("lab"), first["findings"]) == {
        "previous": None, "newly_failing": [], "newly_fixed": [], "transitions": []}
    history.record(first)
    history.record(_report("other-inventory", AT + timedelta(hours=1), {"b.x|fw1": "fail"}, "prod"))
    second = _report("two", AT + timedelta(days=1), {
        "b.x|fw1": "fail",      # pass -> fail: newly failing
        "b.x|fw2": "pass",      # fail -> pass: newly fixed
        "d.y|kc": "fail",       # error -> fail: still failing, neither
        "d.z|kc": "waived",     # fail -> waived: not fixed
        "e.t|alice": "manual",  # pass -> manual: newly failing
        "e.t|bob": "error",     # not audited before: newly failing
    })
    d = drift(history.previous("lab"), second["findings"])
    assert d["previous"] == {"id": "one", "generated_at": "2026-11-25T12:00:00.000000Z"}
    assert d["newly_failing"] == [{"control": "b.x", "target": "fw1"},
                                  {"control": "e.t", "target": "alice"},
                                  {"control": "e.t", "target": "bob"}]
    assert d["newly_fixed"] == [{"control": "b.x", "target": "fw2"}]
    assert [(x["control"], x["target"], x["before"], x["status"]) for x in d["transitions"]] == [
        ("b.x", "fw1", "pass", "fail"), ("b.x", "fw2", "fail", "pass"),
        ("e.t", "alice", "pass", "manual"), ("e.t", "bob", None, "error")]
    history.record(second)
    assert [a["id"] for a in history.audits("lab")] == ["two", "one"]
    with pytest.raises(HistoryError, match="cannot record audit two"):
        history.record(second)  # an audit is kept once
    history.close()


def test_timestamps_are_utc_whatever_the_offset(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    with History(f"sqlite:///{db}") as history:
        history.record(_report("a", "2026-11-25T14:00:00+02:00", {"a.x|t": "pass"}))
        prev = history.previous("lab")
    assert prev["generated_at"] == AT and prev["generated_at"].utcoffset() == timedelta(0)
    stored = sqlite3.connect(db).execute("select generated_at from audits").fetchone()[0]
    assert stored.startswith("2026-11-25 12:00:00")  # UTC wall time, not 14:00
    with History(f"sqlite:///{db}") as history, pytest.raises(HistoryError):
        history.record({**_report("b", AT, {}), "generated_at": "2026-11-25T12:00:00"})


def test_bad_history_url_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match="cannot open"):
        History("nosuchdb://x")
    with pytest.raises(HistoryError, match=r"u:\*\*\*@127\.0\.0\.1:1/db: cannot open"):
        History("postgresql+psycopg://u:secret@127.0.0.1:1/db")  # password never shown


def _bundle(path: Path, modes: dict[str, str], at: datetime) -> Path:
    """An evidence bundle of key stores with the given file modes."""
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps({"schema": "skydd.bundle/1"}))
    kind = path / "evidence" / "files.keystore"
    kind.mkdir(parents=True)
    for target, mode in modes.items():
        data = {"path": f"/srv/{target}", "files": [
            {"path": f"/srv/{target}/ca.key", "type": "file", "mode": mode, "uid": 0, "gid": 0}]}
        ev = Evidence.observed("files.keystore", target, f"files:{target}", at, data,
                               site="torsby", municipality="torsby")
        (kind / f"{target}.json").write_text(json.dumps(ev.to_dict()))
    return path


def test_audit_reports_drift_since_the_previous_audit(skydd_home: Path, tmp_path: Path) -> None:
    settings = Settings(home=skydd_home)
    selection = Selection.parse(None, "d.key-files-private", None)
    first = _bundle(tmp_path / "b1", {"pki": "0600", "tls": "0644"}, AT)
    r1 = run_audit(settings, None, selection, bundle=first, out_dir=tmp_path / "r1", clock=lambda: AT)
    assert r1.report["drift"]["previous"] is None
    later = AT + timedelta(days=1)
    second = _bundle(tmp_path / "b2", {"pki": "0644", "tls": "0600"}, later)
    r2 = run_audit(settings, None, selection, bundle=second, out_dir=tmp_path / "r2",
                   clock=lambda: later)
    d = r2.report["drift"]
    assert d["previous"]["id"] == r1.report["id"]
    assert d["newly_failing"] == [{"control": "d.key-files-private", "target": "pki"}]
    assert d["newly_fixed"] == [{"control": "d.key-files-private", "target": "tls"}]
    assert [(x["target"], x["before"], x["status"]) for x in d["transitions"]] == [
        ("pki", "pass", "fail"), ("tls", "fail", "pass")]
    html = (tmp_path / "r2" / "report.html").read_text(encoding="utf-8")
    assert r1.report["id"] in html and "Newly failing" in html
    assert (skydd_home / "history.db").exists()
    assert [a["id"] for a in History(settings.history_url).audits("socialcare-lab")] == [
        r2.report["id"], r1.report["id"]]


def test_local_offsets_compare_as_instants(tmp_path: Path) -> None:
    with History(f"sqlite:///{tmp_path / 'h.db'}") as history:
        stockholm = timezone(timedelta(hours=1))
        history.record(_report("x", datetime(2026, 11, 25, 13, 0, tzinfo=stockholm), {}))
        assert history.previous("lab")["generated_at"] == AT
