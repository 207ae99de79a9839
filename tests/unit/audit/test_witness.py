"""The witness (issue 12 item 1, ADR 0008): signed checkpoints kept in the history database,
outside ``$SKYDD_HOME``, so cutting the log back is caught without a report at hand.

Each attack is played as someone with write access to ``$SKYDD_HOME`` but neither the signing
key nor the history database would: on the real file, against a real SQLite witness, through the
real console script.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from audit import log
from audit.history import History
from audit.log import AuditLog, LogAnchor, Problem, line_hash, verify_log, witness_url
from audit.log.witness import WitnessRefused, extension, latest, observe
from audit.signing import Signer, load_signer
from estate.canonical import canonical_json

SKYDD = str(Path(sys.executable).parent / "skydd")


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A history store outside the home: the witness."""
    url = f"sqlite:///{tmp_path / 'elsewhere' / 'history.db'}"
    monkeypatch.setenv("SKYDD_HISTORY_URL", url)
    return url


@pytest.fixture
def home(tmp_path: Path, store: str) -> Path:
    home = tmp_path / "home"
    signer = load_signer(home)
    for i in range(3):
        log.append(home / "audit.log", signer, "waiver.request", "alice", {"i": i})
    return home  # genesis, then 3 × (entry, checkpoint): 7 lines, all witnessed


def skydd(home: Path, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SKYDD_HOME": str(home), "SKYDD_ACTOR": "alice"}
    if url is not None:
        env["SKYDD_HISTORY_URL"] = url
    return subprocess.run([SKYDD, *args], capture_output=True, text=True, env=env, timeout=120)


def lines(home: Path) -> list[bytes]:
    return (home / "audit.log").read_bytes().splitlines(keepends=True)


def held(store: str, signer: Signer) -> tuple[int, str] | None:
    with History(store) as history:
        w = latest(history, signer.public_key)
    return None if w is None else (w.size, w.head)


def rows(store: str) -> list[tuple[int, int]]:
    with sqlite3.connect(store.removeprefix("sqlite:///")) as db:
        return db.execute("SELECT previous, size FROM witness_checkpoints ORDER BY size").fetchall()


def test_every_signed_checkpoint_is_witnessed_as_a_chain(home: Path, store: str) -> None:
    signer = load_signer(home)
    last = lines(home)[-1].rstrip(b"\n")
    assert held(store, signer) == (7, line_hash(last))
    assert rows(store) == [(0, 3), (3, 5), (5, 7)]  # each extends the one before it
    log.append(home / "audit.log", signer, "attestation", "bob", {"x": 1})
    assert held(store, signer) == (9, line_hash(lines(home)[-1].rstrip(b"\n")))


def test_an_honest_append_keeps_verifying_against_the_witness(home: Path) -> None:
    log.append(home / "audit.log", load_signer(home), "waiver.approve", "bob", {"w": 1})
    r = skydd(home, "log", "verify")
    assert r.returncode == 0, r.stderr
    assert "witness: line 9 still hashes to" in r.stdout
    j = json.loads(skydd(home, "log", "verify", "--format", "json").stdout)
    assert j["intact"] and j["witness"]["size"] == 9 and j["witness"]["proven"]


def test_cutting_entries_and_checkpoints_off_the_end_is_caught(home: Path) -> None:
    witnessed_head = line_hash(lines(home)[-1].rstrip(b"\n"))
    (home / "audit.log").write_bytes(b"".join(lines(home)[:5]))  # ends in a genuine checkpoint
    assert skydd(home, "log", "verify", "--no-witness").returncode == 0  # the log alone can't tell
    r = skydd(home, "log", "verify")
    assert r.returncode == 1
    assert "rollback" in r.stderr and "held 7 lines" in r.stderr and witnessed_head in r.stderr


def test_an_append_after_a_cut_is_refused_by_the_witness_and_said(home: Path, store: str) -> None:
    signer = load_signer(home)
    before = held(store, signer)
    (home / "audit.log").write_bytes(b"".join(lines(home)[:5]))
    said: list[str] = []
    log.append(home / "audit.log", signer, "waiver.request", "alice", {"i": 9}, warn=said.append)
    assert len(lines(home)) == 7  # the entry stands: the witness never blocks or changes the log
    assert len(said) == 1 and "witness refused" in said[0] and "size 7" in said[0]
    assert held(store, signer) == before  # a fork is not recorded
    # Both copies are genuinely signed: only the witness tells the rewritten one from the real one.
    assert skydd(home, "log", "verify", "--no-witness").returncode == 0
    r = skydd(home, "log", "verify")
    assert r.returncode == 1 and "fork" in r.stderr and "line 7 hashes to" in r.stderr


def test_an_older_genuine_copy_put_back_is_caught(home: Path, store: str) -> None:
    old = home.parent / "copy.log"
    shutil.copy(home / "audit.log", old)
    signer = load_signer(home)
    log.append(home / "audit.log", signer, "waiver.approve", "bob", {"w": 1})
    shutil.copy(old, home / "audit.log")
    r = skydd(home, "log", "verify")
    assert r.returncode == 1 and "held 9 lines" in r.stderr


def test_a_rewritten_and_rechained_tail_is_caught(home: Path, store: str) -> None:
    raw = lines(home)
    cut = raw[:5]  # the last entry (seq 5) and its checkpoint are rewritten
    forged = json.loads(raw[5])
    forged["data"] = {"i": 1, "waiver": "w-forged"}
    forged["prev"] = line_hash(cut[-1].rstrip(b"\n"))
    cut.append(canonical_json(forged) + b"\n")
    cp = json.loads(raw[6])  # the old checkpoint, re-chained: its signature cannot follow
    cp.update(prev=line_hash(cut[-1].rstrip(b"\n")))
    cp["data"]["head"]["hash"] = cp["prev"]
    cut.append(canonical_json(cp) + b"\n")
    (home / "audit.log").write_bytes(b"".join(cut))
    r = skydd(home, "log", "verify")
    assert r.returncode == 1 and "witness: holds checkpoint size 7" in r.stderr
    with History(store) as history, pytest.raises(WitnessRefused) as refused:
        observe(home / "audit.log", load_signer(home).public_key, history)
    assert refused.value.kind is Problem.FORKED


def test_deleting_the_whole_log_is_caught(home: Path, store: str) -> None:
    (home / "audit.log").unlink()
    r = skydd(home, "log", "verify")
    assert r.returncode == 1
    assert "the log is gone, but the witness holds its checkpoint size 7" in r.stderr
    # A fresh log started in its place is refused by the witness and does not verify.
    said: list[str] = []
    log.append(home / "audit.log", load_signer(home), "waiver.request", "mallory", {}, warn=said.append)
    assert said and "witness refused" in said[0]
    r = skydd(home, "log", "verify")
    assert r.returncode == 1 and "held 7 lines" in r.stderr


def test_entries_appended_by_another_writer_are_proven_across_the_gap(home: Path, store: str) -> None:
    signer = load_signer(home)
    with AuditLog(home / "audit.log", signer) as writer:  # the deny log: not witnessed itself
        for i in range(50):
            writer.append("access.deny", "skydd.decision", {"i": i})
    assert held(store, signer)[0] == 7  # type: ignore[index]
    log.append(home / "audit.log", signer, "audit", "alice", {})
    assert held(store, signer) == (len(lines(home)), line_hash(lines(home)[-1].rstrip(b"\n")))


def test_an_unsigned_tail_is_never_witnessed(home: Path, store: str) -> None:
    signer = load_signer(home)
    last = lines(home)[-1]
    entry = {"seq": json.loads(last)["seq"] + 1, "at": "2026-11-25T12:00:00.000000Z",
             "event": "waiver.approve", "actor": "mallory", "data": {},
             "prev": line_hash(last.rstrip(b"\n"))}
    with (home / "audit.log").open("ab") as fh:
        fh.write(canonical_json(entry) + b"\n")
    with History(store) as history:
        assert extension(home / "audit.log", signer.public_key,
                         latest(history, signer.public_key)) == (None, None)
        assert observe(home / "audit.log", signer.public_key, history).size == 7  # type: ignore[union-attr]


def test_concurrent_writers_keep_the_witness_one_chain(home: Path, store: str) -> None:
    signer = load_signer(home)
    said: list[str] = []

    def write(n: int) -> None:
        for i in range(8):
            log.append(home / "audit.log", signer, "waiver.request", f"w{n}", {"i": i}, warn=said.append)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert said == []
    chain = rows(store)
    assert all(prev == before for (prev, _), (_, before) in zip(chain[1:], chain, strict=False))
    assert chain[-1][1] == len(lines(home)) == 7 + 3 * 8 * 2
    assert verify_log(home / "audit.log", signer.public_key,
                      anchors=[LogAnchor(chain[-1][1], held(store, signer)[1])]).intact  # type: ignore[index]


def test_an_unreachable_witness_never_blocks_a_write_and_is_said(home: Path, store: str) -> None:
    signer = load_signer(home)
    down = "postgresql+psycopg://skydd@127.0.0.1:1/history"  # nothing listens on port 1
    said: list[str] = []
    entry = log.append(home / "audit.log", signer, "waiver.request", "alice", {"i": 3},
                       witness=down, warn=said.append)
    assert entry["seq"] == 7 and len(said) == 1 and "not witnessed" in said[0]
    assert verify_log(home / "audit.log", signer.public_key).intact
    r = skydd(home, "log", "verify", "--witness", url=down)
    assert r.returncode == 2 and "--witness" in r.stderr
    r = skydd(home, "log", "verify", url=down)  # by default: verified, with a warning
    assert r.returncode == 0 and "warning: the witness was not checked" in r.stderr
    log.append(home / "audit.log", signer, "waiver.request", "alice", {"i": 4})  # back: catches up
    assert held(store, signer)[0] == len(lines(home)) == 11  # type: ignore[index]


def test_a_store_inside_the_home_is_not_a_witness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("SKYDD_HISTORY_URL", f"sqlite:///{home / 'db' / 'h.db'}")
    url, why = witness_url(home)
    assert url is None and "inside $SKYDD_HOME" in why
    monkeypatch.delenv("SKYDD_HISTORY_URL")
    assert witness_url(home)[0] is None  # the default store lives in the home
    log.append(home / "audit.log", load_signer(home), "waiver.request", "alice", {})
    assert not (home / "history.db").exists()  # nothing pretends to witness
    r = skydd(home, "log", "verify", "--witness")
    assert r.returncode == 2 and "no history store is configured outside" in r.stderr


def test_a_history_database_made_before_the_witness_still_works(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:  # the schema as it was: the audits table only
        conn.execute("CREATE TABLE audits (seq INTEGER PRIMARY KEY AUTOINCREMENT, id VARCHAR(64) "
                     "NOT NULL UNIQUE, inventory VARCHAR(200) NOT NULL, generated_at DATETIME "
                     "NOT NULL, status VARCHAR(20) NOT NULL, statuses JSON NOT NULL)")
        conn.execute("INSERT INTO audits (id, inventory, generated_at, status, statuses) VALUES "
                     "('a1', 'lab', '2026-11-25 12:00:00.000000', 'compliant', '{\"a.x|t\": \"pass\"}')")
    with History(f"sqlite:///{db}") as history:
        assert history.previous("lab")["statuses"] == {"a.x|t": "pass"}  # type: ignore[index]
        home = tmp_path / "home"
        signer = load_signer(home)
        log.append(home / "audit.log", signer, "waiver.request", "alice", {}, witness=f"sqlite:///{db}")
        assert latest(history, signer.public_key).size == 3  # type: ignore[union-attr]


def test_an_audit_is_witnessed_and_warns_when_the_witness_refuses(skydd_home: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime

    from estate.settings import Settings
    from skydd.auditing import Selection, run_audit
    from tests.unit.audit.test_history import _bundle

    store = f"sqlite:///{tmp_path / 'elsewhere' / 'history.db'}"
    monkeypatch.setenv("SKYDD_HISTORY_URL", store)
    at = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    settings = Settings(home=skydd_home)
    selection = Selection.parse(None, "d.key-files-private", None)
    bundle = _bundle(tmp_path / "b", {"pki": "0600"}, at)
    r1 = run_audit(settings, None, selection, bundle=bundle, out_dir=tmp_path / "r1", clock=lambda: at)
    assert not [w for w in r1.warnings if "witness" in w]
    signer = load_signer(skydd_home)
    assert held(store, signer) == (len(lines(skydd_home)), line_hash(lines(skydd_home)[-1].rstrip(b"\n")))
    (skydd_home / "audit.log").write_bytes(b"".join(lines(skydd_home)[:3]))  # cut back to the first audit.run
    r2 = run_audit(settings, None, selection, bundle=bundle, out_dir=tmp_path / "r2", clock=lambda: at)
    refused = [w for w in r2.warnings if "witness refused" in w]
    assert refused and all("rollback" in w or "fork" in w for w in refused), r2.warnings
    assert r2.report["log"]  # the audit itself stands: the report is written and anchored


def test_an_audit_with_the_witness_down_says_so(skydd_home: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime

    from estate.settings import Settings
    from skydd.auditing import Selection, run_audit
    from tests.unit.audit.test_history import _bundle

    monkeypatch.setenv("SKYDD_HISTORY_URL", "postgresql+psycopg://skydd@127.0.0.1:1/history")
    at = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    bundle = _bundle(tmp_path / "b", {"pki": "0600"}, at)
    r = run_audit(Settings(home=skydd_home), None, Selection.parse(None, "d.key-files-private", None),
                  bundle=bundle, out_dir=tmp_path / "r", clock=lambda: at)
    assert any("not witnessed" in w for w in r.warnings), r.warnings
    assert r.report["log"] and verify_log(skydd_home / "audit.log",
                                          load_signer(skydd_home).public_key).intact


def _unsigned_tail(home: Path) -> None:
    last = lines(home)[-1]
    entry = {"seq": json.loads(last)["seq"] + 1, "at": "2026-11-25T12:00:00.000000Z",
             "event": "waiver.request", "actor": "crashed-writer", "data": {},
             "prev": line_hash(last.rstrip(b"\n"))}
    with (home / "audit.log").open("ab") as fh:
        fh.write(canonical_json(entry) + b"\n")


def test_log_seal_is_witnessed_and_a_down_witness_is_a_warning(home: Path, store: str) -> None:
    signer = load_signer(home)
    _unsigned_tail(home)
    r = skydd(home, "log", "seal", "--accept-unsigned", "--reason", "crash at 03:00",
              url="postgresql+psycopg://skydd@127.0.0.1:1/history")
    assert r.returncode == 0 and "the log is signed again" in r.stdout
    assert "warning: the entry is in the audit log but not witnessed" in r.stderr
    assert held(store, signer)[0] == 7  # type: ignore[index]
    _unsigned_tail(home)
    r = skydd(home, "log", "seal", "--accept-unsigned", "--reason", "again")
    assert r.returncode == 0 and r.stderr == ""
    assert held(store, signer) == (len(lines(home)), line_hash(lines(home)[-1].rstrip(b"\n")))


def test_other_writers_say_it_on_stderr_by_default(tmp_path: Path) -> None:
    """Waivers, sign-offs, attestations and training write through ``log.append`` without a
    ``warn``: the warning goes to the logging system, which prints it on stderr."""
    code = ("from pathlib import Path\nfrom audit import log\nfrom audit.signing import load_signer\n"
            "h = Path(r'%s')\nlog.append(h / 'audit.log', load_signer(h), 'waiver.request', 'a', {})\n"
            % (tmp_path / "home"))
    env = {**os.environ, "SKYDD_HISTORY_URL": "postgresql+psycopg://skydd@127.0.0.1:1/history"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 0 and "the entry is in the audit log but not witnessed" in r.stderr


def test_a_change_inside_the_unwitnessed_gap_is_refused_at_the_next_write(home: Path, store: str) -> None:
    signer = load_signer(home)
    with AuditLog(home / "audit.log", signer) as writer:  # not witnessed: a gap of 20 entries
        writer.append_many([("access.deny", "skydd.decision", {"i": i}) for i in range(20)])
    path = home / "audit.log"
    path.write_bytes(path.read_bytes().replace(b'{"i":4}', b'{"i":5}', 1))  # the tail still verifies
    said: list[str] = []
    log.append(path, signer, "waiver.request", "alice", {"i": 99}, warn=said.append)
    assert len(said) == 1 and "line 13 does not chain from the line before it" in said[0]
    assert held(store, signer)[0] == 7  # type: ignore[index]


def test_a_damaged_witness_store_never_fails_the_write(home: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    said: list[str] = []
    entry = log.append(home / "audit.log", load_signer(home), "waiver.request", "alice", {},
                       witness=f"sqlite:///{junk}", warn=said.append)
    assert entry["seq"] == 7 and len(said) == 1 and "not witnessed" in said[0]
    assert verify_log(home / "audit.log", load_signer(home).public_key).intact


# -- a log restored behind the witness: the reset ----------------------------------------------

def restore_backup(home: Path) -> bytes:
    """The disk failed; the backup holds the log as it was 2 lines ago (genuine, signed)."""
    witnessed_head = line_hash(lines(home)[-1].rstrip(b"\n"))
    (home / "audit.log").write_bytes(b"".join(lines(home)[:5]))
    return witnessed_head.encode()


def test_a_restored_log_is_accepted_again_only_by_a_signed_reset_that_every_verify_names(
        home: Path, store: str) -> None:
    restore_backup(home)
    assert skydd(home, "log", "verify").returncode == 1
    # Whoever can write the home but holds no key cannot make the cut log acceptable.
    keyless = home.parent / "keyless"
    keyless.mkdir()
    shutil.copy(home / "audit.log", keyless / "audit.log")
    r = skydd(keyless, "log", "witness", "--reset", "--reason", "trust me")
    assert r.returncode == 2 and "no signing key" in r.stderr and not (keyless / "keys").exists()
    assert skydd(home, "log", "witness", "--reset").returncode == 2  # no reason: refused

    r = skydd(home, "log", "witness", "--reset", "--reason", "disk replaced, restored backup 02:00")
    assert r.returncode == 0, r.stderr
    assert "reset 1 by alice" in r.stdout and "held size 7" in r.stdout
    entry = json.loads(lines(home)[5])
    assert entry["event"] == "witness.reset" and entry["data"]["from_size"] == 7
    r = skydd(home, "log", "verify")
    assert r.returncode == 0, r.stderr
    assert "the witness was reset 1 time(s)" in r.stderr and "disk replaced" in r.stderr
    shown = skydd(home, "log", "witness")
    assert shown.returncode == 0 and "holds checkpoint size 7" in shown.stdout
    assert "reset 1 by alice" in shown.stdout and "restored backup 02:00" in shown.stdout


def test_after_a_reset_the_witness_catches_the_next_rollback_again(home: Path, store: str) -> None:
    restore_backup(home)
    assert skydd(home, "log", "witness", "--reset", "--reason", "restored").returncode == 0
    signer = load_signer(home)
    log.append(home / "audit.log", signer, "waiver.request", "alice", {"i": 9})
    assert held(store, signer)[0] == len(lines(home)) == 9  # type: ignore[index]
    (home / "audit.log").write_bytes(b"".join(lines(home)[:7]))
    r = skydd(home, "log", "verify")
    assert r.returncode == 1 and "rollback" in r.stderr and "held 9 lines" in r.stderr


def test_a_reset_is_refused_while_the_witness_accepts_the_log_or_the_log_is_broken(
        home: Path, store: str) -> None:
    r = skydd(home, "log", "witness", "--reset", "--reason", "why not")
    assert r.returncode == 1 and "nothing to reset" in r.stderr
    raw = lines(home)[:5]
    raw[3] = raw[3].replace(b'"alice"', b'"mallory"')  # an entry rewritten: not a genuine backup
    (home / "audit.log").write_bytes(b"".join(raw))
    r = skydd(home, "log", "witness", "--reset", "--reason", "restored")
    assert r.returncode == 1 and "not intact on its own" in r.stderr
    assert "reset 1" not in skydd(home, "log", "witness").stdout


def test_a_reset_forged_into_the_witness_store_is_not_honoured(home: Path, store: str) -> None:
    restore_backup(home)
    signer = load_signer(home)
    with sqlite3.connect(store.removeprefix("sqlite:///")) as db:
        db.execute("INSERT INTO witness_resets (origin, epoch, from_size, from_head, actor, reason,"
                   " at, signature) VALUES (?, 1, 7, 'x', 'mallory', 'restored', "
                   "'2026-11-25T12:00:00Z', ?)", (signer.key_id, "A" * 88))
    r = skydd(home, "log", "verify", "--witness")
    assert r.returncode == 2 and "reset 1 is not one the log's key signed" in r.stderr
    r = skydd(home, "log", "verify")  # never an intact verdict that silently skipped the witness
    assert "warning: the witness was not checked" in r.stderr and "tampered" in r.stderr
