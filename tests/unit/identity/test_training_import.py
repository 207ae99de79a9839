"""LMS imports into a real SQLite training store: bad rows by line and field, duplicates,
unknown users, idempotency and all-or-nothing — and the CLI's exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from identity.training_import import ImportRejected, import_text
from identity.training_store import Completion, TrainingStore

AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
CATALOGUE = {
    "courses": [{"code": "sec-basic", "title": "Information security basics", "validity_days": 365},
                {"code": "patient-data", "title": "Personal data in social care", "validity_days": 730}],
    "requirements": [{"role": "socialcare-user", "course": "sec-basic"},
                     {"role": "socialcare-user", "course": "patient-data"}],
}


@pytest.fixture
def store(tmp_path: Path) -> TrainingStore:
    s = TrainingStore(f"sqlite:///{tmp_path / 'training.db'}")
    import_text(s, json.dumps(CATALOGUE), "json", "catalogue.json", AT)
    with s.transaction() as tx:
        for name, hsa in (("anna.torsby", "SE2321000016-T001"), ("bo.sunne", "SE2321000016-S001")):
            s.register_user(tx, name, AT, hsa_id=hsa, roles=["socialcare-user"])
    yield s
    s.close()


def completions(store: TrainingStore) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(Completion))


GOOD_CSV = ("username,course,completed_at,score\n"
            "anna.torsby,sec-basic,2026-03-01,92\n"
            "anna.torsby,patient-data,2025-05-02T09:30:00+02:00,88\n"
            "bo.sunne,sec-basic,2025-10-01,75\n")


def test_csv_import_then_same_file_again_changes_nothing(store: TrainingStore) -> None:
    first = import_text(store, GOOD_CSV, "csv", "lms.csv", AT)
    assert (first.rows, first.inserted, first.unchanged) == (3, 3, 0)
    again = import_text(store, GOOD_CSV, "csv", "lms.csv", AT)
    assert (again.rows, again.inserted, again.unchanged) == (3, 0, 3)
    assert completions(store) == 3
    anna = store.standing("anna.torsby", AT)
    assert anna is not None and anna.current
    pd = next(c for c in anna.courses if c.course == "patient-data")
    assert pd.completed_at == datetime(2025, 5, 2, 7, 30, tzinfo=UTC)  # zone honoured


def test_every_bad_row_is_reported_by_line_and_field_and_nothing_is_written(store: TrainingStore) -> None:
    text = ("username,course,completed_at\n"
            "anna.torsby,sec-basic,2026-03-01\n"      # 2 good
            "nobody.here,sec-basic,2026-03-01\n"      # 3 unknown user
            "bo.sunne,sec-advanced,2026-03-01\n"      # 4 unknown course
            "bo.sunne,sec-basic,2026-13-01\n"         # 5 bad date
            "bo.sunne,sec-basic,2027-01-01\n"         # 6 in the future
            "bo.sunne,sec-basic,2026-02-01T10:00\n"   # 7 time without a zone
            ",sec-basic,2026-02-01\n"                 # 8 no user
            "anna.torsby,sec-basic,2026-03-01\n")     # 9 duplicate of 2
    with pytest.raises(ImportRejected) as info:
        import_text(store, text, "csv", "bad.csv", AT)
    got = [(e.line, e.field) for e in info.value.errors]
    assert got == [(3, "username"), (4, "course"), (5, "completed_at"), (6, "completed_at"),
                   (7, "completed_at"), (8, "username"), (9, None)]
    assert "duplicate of line 2" in info.value.errors[-1].message
    assert "unknown user 'nobody.here'" in info.value.errors[0].message
    assert completions(store) == 0  # the good row 2 was not written either


def test_header_without_required_columns_is_rejected(store: TrainingStore) -> None:
    with pytest.raises(ImportRejected) as info:
        import_text(store, "user,when\nanna.torsby,2026-01-01\n", "csv", "x.csv", AT)
    assert info.value.errors[0].line == 1
    assert "course" in info.value.errors[0].message and "completed_at" in info.value.errors[0].message


def test_json_rows_are_reported_by_their_line(store: TrainingStore) -> None:
    text = ('{\n  "completions": [\n'
            '    {"username": "anna.torsby", "course": "sec-basic", "completed_at": "2026-03-01"},\n'
            '    {"hsa_id": "SE2321000016-X999", "course": "sec-basic",\n'
            '     "completed_at": "2026-03-01"},\n'
            '    {"username": "bo.sunne", "course": "sec-basic", "completed_at": 20260301}\n'
            "  ]\n}\n")
    with pytest.raises(ImportRejected) as info:
        import_text(store, text, "json", "bad.json", AT)
    assert [(e.line, e.field) for e in info.value.errors] == [(4, "hsa_id"), (6, "completed_at")]
    assert completions(store) == 0


def test_json_by_hsa_id_and_user_mismatch(store: TrainingStore) -> None:
    ok = [{"hsa_id": "SE2321000016-S001", "course": "sec-basic", "completed_at": "2026-01-10"}]
    assert import_text(store, json.dumps(ok), "json", "ok.json", AT).inserted == 1
    bad = [{"username": "anna.torsby", "hsa_id": "SE2321000016-S001", "course": "sec-basic",
            "completed_at": "2026-01-10"}]
    with pytest.raises(ImportRejected) as info:
        import_text(store, json.dumps(bad), "json", "bad.json", AT)
    assert info.value.errors[0].field == "hsa_id"


def test_invalid_json_names_the_line(store: TrainingStore) -> None:
    with pytest.raises(ImportRejected) as info:
        import_text(store, '[\n {"username": "anna.torsby",\n  oops}\n]', "json", "x.json", AT)
    assert info.value.errors[0].line == 3


def test_a_failing_write_rolls_back_everything(store: TrainingStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """All or nothing even when the database fails half-way through the transaction."""
    calls = {"n": 0}
    real = store.record_event

    def boom(*a, **kw):
        calls["n"] += 1
        raise RuntimeError("disk full")

    monkeypatch.setattr(store, "record_event", boom)
    with pytest.raises(RuntimeError):
        import_text(store, GOOD_CSV, "csv", "lms.csv", AT)
    monkeypatch.setattr(store, "record_event", real)
    assert calls["n"] == 1 and completions(store) == 0


def test_status_lists_overdue_and_since_when(store: TrainingStore) -> None:
    import_text(store, GOOD_CSV, "csv", "lms.csv", AT)
    by = {s.username: s for s in store.standings(AT)}
    assert by["anna.torsby"].current
    bo = {c.course: c for c in by["bo.sunne"].courses}
    assert bo["sec-basic"].state == "expired"
    assert bo["sec-basic"].overdue_since == datetime(2026, 10, 1, tzinfo=UTC)
    assert bo["patient-data"].state == "missing" and bo["patient-data"].overdue_since == AT
    # Earlier in time the same completion was current: time is a parameter.
    earlier = store.standing("bo.sunne", datetime(2026, 6, 1, tzinfo=UTC))
    assert earlier is not None and earlier.courses[1].state == "current"


# -- the CLI -----------------------------------------------------------------------------------

def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    inv = home / "inventory.yaml"
    return subprocess.run([sys.executable, "-m", "skydd", *args, "--inventory", str(inv)],
                          capture_output=True, text=True, env={"SKYDD_HOME": str(home), "PATH": "/usr/bin:/bin"},
                          timeout=120)


@pytest.fixture
def cli_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "inventory.yaml").write_text(
        "name: t\nmunicipalities: [{id: torsby, name: Torsby}]\n"
        "sites: [{id: torsby, name: Torsby, municipality: torsby}]\n"
        "training_store: {url: 'sqlite:///${SKYDD_HOME}/training.db'}\n")
    s = TrainingStore(f"sqlite:///{home / 'training.db'}")
    import_text(s, json.dumps(CATALOGUE), "json", "catalogue.json", AT)
    with s.transaction() as tx:
        s.register_user(tx, "anna.torsby", AT, roles=["socialcare-user"])
        s.register_user(tx, "bo.sunne", AT, roles=["socialcare-user"])
    s.close()
    return home


def test_cli_import_status_and_rejection(cli_home: Path) -> None:
    good = cli_home / "lms.csv"
    good.write_text(GOOD_CSV)
    r = run(cli_home, "training", "import", str(good))
    assert r.returncode == 0, r.stderr
    assert "3 new" in r.stdout
    r = run(cli_home, "training", "import", str(good))
    assert r.returncode == 0 and "0 new, 3 already recorded" in r.stdout
    bad = cli_home / "bad.csv"
    bad.write_text("username,course,completed_at\nghost,sec-basic,2026-01-01\n")
    r = run(cli_home, "training", "import", str(bad))
    assert r.returncode == 1
    assert "line 2, username: unknown user 'ghost'" in r.stderr and "nothing was written" in r.stderr
    r = run(cli_home, "training", "status", "--format", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    bo = next(u for u in doc["users"] if u["username"] == "bo.sunne")
    assert doc["overdue"] == 1 and not bo["current"]
    assert {c["state"] for c in bo["courses"]} == {"missing", "expired"}
    r = run(cli_home, "training", "status")
    assert "bo.sunne" in r.stdout and "never completed" in r.stdout and "anna.torsby" not in r.stdout


def test_cli_bad_input_is_one_line_exit_2(cli_home: Path) -> None:
    r = run(cli_home, "training", "import", str(cli_home / "missing.csv"))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "no such file" in r.stderr
    (cli_home / "x.txt").write_text("a")
    r = run(cli_home, "training", "import", str(cli_home / "x.txt"))
    assert r.returncode == 2 and "--format" in r.stderr


# -- hostile input is rejected input (issue 12): exit 1, nothing written, never a traceback ------

@pytest.mark.timeout(20)
@pytest.mark.parametrize("text,needle", [
    ("[" * 100_000, "not valid JSON: RecursionError"),
    ('{"completions": [{"username": "anna.torsby", "n": 1' + "0" * 5000 + "}]}", "not valid JSON: ValueError"),
    ('{"courses": [{"code": "x", "title": "X", "validity_days": 1' + "0" * 30 + "}]}", "validity_days"),
    ('{"courses": [{"code": "x\\ud800", "title": "X", "validity_days": 3}]}', "lone surrogate"),
    ('[{"username": "anna.torsby", "course": "sec-basic", "completed_at": "0001-01-01T00:00:00+01:00"}]',
     "not a date or time"),
    ('[{"username": "anna.torsby", "course": "sec-basic", "completed_at": "9999-12-31T23:59:59-01:00"}]',
     "not a date or time"),
])
def test_hostile_json_is_rejected_with_nothing_written(store: TrainingStore, text: str, needle: str) -> None:
    with pytest.raises(ImportRejected) as info:
        import_text(store, text, "json", "evil.json", AT)
    assert any(needle in str(e) for e in info.value.errors), info.value.errors
    assert completions(store) == 0


def test_an_oversized_or_non_utf8_file_is_rejected(store: TrainingStore, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from identity import training_import

    big = tmp_path / "big.csv"
    big.write_text(GOOD_CSV + "#" * 2048)
    monkeypatch.setattr(training_import, "MAX_IMPORT_BYTES", 1024)
    with pytest.raises(ImportRejected, match="rejected") as info:
        training_import.import_file(store, big, None, AT)
    assert "larger than the limit of 1024 bytes" in str(info.value.errors[0])
    bad = tmp_path / "bad.csv"
    bad.write_bytes(GOOD_CSV.encode().replace(b"anna", b"\xffnna"))
    with pytest.raises(ImportRejected) as info:
        training_import.import_file(store, bad, None, AT)
    assert "not UTF-8" in str(info.value.errors[0])
    assert completions(store) == 0


def test_csv_with_nul_bytes_and_a_huge_field_is_rejected(store: TrainingStore) -> None:
    with pytest.raises(ImportRejected):
        import_text(store, GOOD_CSV.replace("bo.sunne", "bo\x00sunne"), "csv", "nul.csv", AT)
    with pytest.raises(ImportRejected, match="rejected") as info:
        import_text(store, "username,course,completed_at\n" + "a" * 200_000 + ",x,y\n", "csv", "wide.csv", AT)
    assert "not valid CSV" in str(info.value.errors[0])
    assert completions(store) == 0


def test_an_unknown_key_with_a_lone_surrogate_is_reported_printably(store: TrainingStore) -> None:
    with pytest.raises(ImportRejected) as info:
        import_text(store, '{"x\\ud800": []}', "json", "evil.json", AT)
    assert str(info.value.errors[0]).encode("utf-8") == (
        b"line 1, x\\ud800: unknown key (expected courses, requirements, completions)")
