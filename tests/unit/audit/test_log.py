"""The hash-chained audit log: tampering is named, torn lines are reported, checkpoints are signed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import log
from audit.errors import VerificationError
from audit.log import (
    CHECKPOINT,
    GENESIS,
    AuditLog,
    LogWriteError,
    Problem,
    line_hash,
    require_intact,
    verify_log,
)
from audit.log import format as log_format
from audit.signing import Signer, load_signer
from estate.canonical import canonical_json

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves: one second per reading."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return load_signer(tmp_path / "home")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "audit.log"


def write(path: Path, signer: Signer, n: int, *, every: int = 1000) -> None:
    """A genesis checkpoint, ``n`` entries in one commit, and the checkpoint that ends it."""
    with AuditLog(path, signer, clock=Clock(), checkpoint_every=every) as audit_log:
        audit_log.append_many([("audit", "alice", {"i": i, "report": f"r{i}"}) for i in range(n)])


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def entries(path: Path) -> list[dict]:
    return [json.loads(x) for x in lines(path)]


def test_entries_are_chained_canonical_json_lines(path: Path, signer: Signer) -> None:
    write(path, signer, 3)
    raw = lines(path)
    got = entries(path)
    assert [e["seq"] for e in got] == [0, 1, 2, 3, 4]
    assert [e["event"] for e in got] == [CHECKPOINT, "audit", "audit", "audit", CHECKPOINT]
    assert got[0]["prev"] == GENESIS and got[0]["data"]["head"] == {"seq": -1, "hash": GENESIS}
    for before, entry in zip(raw, got[1:], strict=False):
        assert entry["prev"] == line_hash(before.rstrip(b"\n"))
    for line, entry in zip(raw, got, strict=True):
        assert line == canonical_json(entry) + b"\n"
    assert got[1]["at"] == "2026-11-25T12:00:02.000000Z"
    assert (got[1]["actor"], got[1]["data"]) == ("alice", {"i": 0, "report": "r0"})
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_an_untouched_log_verifies(path: Path, signer: Signer) -> None:
    write(path, signer, 10)
    report = require_intact(path, signer.public_key)
    assert (report.entries, report.checkpoints, report.head_seq, report.unsigned) == (12, 2, 11, 0)
    assert report.head_hash == line_hash(lines(path)[-1].rstrip(b"\n"))


def test_an_empty_log_is_intact(path: Path, signer: Signer) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    report = verify_log(path, signer.public_key)
    assert report.intact and report.entries == 0 and report.head_seq == -1


def test_a_changed_byte_names_the_entry(path: Path, signer: Signer) -> None:
    write(path, signer, 10)
    raw = lines(path)
    raw[4] = raw[4].replace(b'"report":"r3"', b'"report":"r5"')
    path.write_bytes(b"".join(raw))
    p = verify_log(path, signer.public_key).problem
    assert p is not None and (p.kind, p.seq, p.line) == (Problem.CHANGED, 4, 5)
    with pytest.raises(VerificationError, match=r"line 5 \(seq 4\) was changed"):
        require_intact(path, signer.public_key)


def test_a_byte_that_breaks_the_json_names_the_line(path: Path, signer: Signer) -> None:
    write(path, signer, 10)
    raw = lines(path)
    raw[6] = raw[6][:10] + b"\x00" + raw[6][11:]
    path.write_bytes(b"".join(raw))
    p = verify_log(path, signer.public_key).problem
    assert p is not None and (p.kind, p.seq, p.line) == (Problem.CHANGED, 6, 7)
    assert "not valid JSON" in p.message


def test_a_changed_prev_names_the_entry_holding_it(path: Path, signer: Signer) -> None:
    write(path, signer, 10)
    raw = lines(path)
    entry = json.loads(raw[5])
    entry["prev"] = "sha256:" + "1" * 64
    raw[5] = canonical_json(entry) + b"\n"
    path.write_bytes(b"".join(raw))
    p = verify_log(path, signer.public_key).problem
    assert p is not None and (p.kind, p.seq, p.line) == (Problem.CHANGED, 5, 6)


def test_a_removed_entry_is_named(path: Path, signer: Signer) -> None:
    write(path, signer, 10)
    raw = lines(path)
    del raw[3]
    path.write_bytes(b"".join(raw))
    p = verify_log(path, signer.public_key).problem
    assert p is not None and (p.kind, p.seq, p.line) == (Problem.REMOVED, 3, 4)
    assert "seq 3 removed" in p.message


def test_several_removed_entries_are_named_as_a_range(path: Path, signer: Signer) -> None:
    write(path, signer, 10)
    raw = lines(path)
    del raw[2:5]
    path.write_bytes(b"".join(raw))
    p = verify_log(path, signer.public_key).problem
    assert p is not None and p.kind is Problem.REMOVED and "seq 2–4 removed" in p.message


def test_two_swapped_entries_are_named(path: Path, signer: Signer) -> None:
    write(path, signer, 10)
    raw = lines(path)
    raw[6], raw[7] = raw[7], raw[6]
    path.write_bytes(b"".join(raw))
    p = verify_log(path, signer.public_key).problem
    assert p is not None and (p.kind, p.seq, p.line) == (Problem.REORDERED, 7, 7)
    assert "seq 7 comes before seq 6" in p.message


def test_a_duplicated_entry_is_named(path: Path, signer: Signer) -> None:
    write(path, signer, 10)
    raw = lines(path)
    raw.insert(5, raw[4])
    path.write_bytes(b"".join(raw))
    p = verify_log(path, signer.public_key).problem
    assert p is not None and (p.kind, p.line) == (Problem.REORDERED, 6)


def test_a_rechained_edit_is_caught_by_the_checkpoint(path: Path, signer: Signer) -> None:
    """An attacker who edits an entry and recomputes every later prev still cannot sign."""
    write(path, signer, 10)
    got = entries(path)
    got[2]["data"]["report"] = "forged"
    out = [canonical_json(e) + b"\n" for e in got[:2]]
    for e in got[2:]:
        e["prev"] = line_hash(out[-1].rstrip(b"\n"))
        if e["event"] == CHECKPOINT:
            e["data"]["head"]["hash"] = e["prev"]
        out.append(canonical_json(e) + b"\n")
    path.write_bytes(b"".join(out))
    p = verify_log(path, signer.public_key).problem
    assert p is not None and (p.kind, p.seq, p.line) == (Problem.SIGNATURE, 11, 12)
    assert "does not verify" in p.message


def test_a_forged_checkpoint_signature_is_reported(path: Path, signer: Signer) -> None:
    write(path, signer, 5)
    raw = lines(path)
    cp = json.loads(raw[-1])
    other = Signer(Ed25519PrivateKey.generate())
    payload = log.checkpoint_payload(cp["data"]["head"]["seq"], cp["data"]["head"]["hash"],
                                     cp["at"], cp["data"]["key_id"])
    cp["data"]["signature"] = other.sign(payload)
    raw[-1] = canonical_json(cp) + b"\n"
    path.write_bytes(b"".join(raw))
    p = verify_log(path, signer.public_key).problem
    assert p is not None and (p.kind, p.seq, p.line) == (Problem.SIGNATURE, 6, 7)


def test_a_log_signed_by_another_key_is_reported(path: Path, signer: Signer) -> None:
    write(path, Signer(Ed25519PrivateKey.generate()), 5)
    p = verify_log(path, signer.public_key).problem
    assert p is not None and p.kind is Problem.SIGNATURE and "not by the trusted key" in p.message


def test_a_torn_last_line_is_reported_not_accepted(path: Path, signer: Signer) -> None:
    write(path, signer, 5)
    data = path.read_bytes()
    path.write_bytes(data[:-40])
    report = verify_log(path, signer.public_key)
    p = report.problem
    assert p is not None and (p.kind, p.line) == (Problem.TORN, 7)
    assert "torn last line" in p.message and "intact through seq 5" in p.message
    assert report.head_seq == 5 and not report.intact


def test_the_next_writer_cuts_a_torn_line_and_records_it(path: Path, signer: Signer) -> None:
    """A crash tore the first line of a batch after a signed checkpoint: cut, kept, recorded.
    (A torn line after unsigned entries is refused instead: test_log_append_only.py.)"""
    write(path, signer, 5)
    fragment = b'{"actor":"alice","at":"2026-11-25T12:00:09.000000Z","data":{"i":'
    with path.open("ab") as fh:
        fh.write(fragment)
    entry = log.append(path, signer, "audit", "bob", {"after": "crash"})
    report = require_intact(path, signer.public_key)
    got = entries(path)
    recovered = got[7]
    assert recovered["event"] == log.RECOVERED and report.recoveries == (7,)
    assert recovered["data"]["sha256"] == line_hash(fragment)
    assert (path.parent / recovered["data"]["saved_as"]).read_bytes() == fragment
    assert entry["seq"] == 8 and got[8]["data"] == {"after": "crash"}


def test_checkpoints_at_least_every_1000_entries_and_after_every_commit(path: Path,
                                                                       signer: Signer) -> None:
    with AuditLog(path, signer, clock=Clock()) as audit_log:
        audit_log.append_many([("audit", "alice", {"i": i}) for i in range(2500)])
        audit_log.append_many([("audit", "alice", {"i": i}) for i in range(10)])
    got = entries(path)
    cps = [e["seq"] for e in got if e["event"] == CHECKPOINT]
    assert cps == [0, 1001, 2002, 2503, 2514]  # genesis, every 1000, the end of each commit
    report = require_intact(path, signer.public_key)
    assert (report.checkpoints, report.unsigned) == (5, 0)


def test_an_open_writer_leaves_nothing_unsigned_between_commits(path: Path, signer: Signer) -> None:
    """Every commit ends in a checkpoint (ADR 0008): no unsigned tail waits for close()."""
    audit_log = AuditLog(path, signer, clock=Clock(), checkpoint_every=4)
    audit_log.append_many([("audit", "alice", {"i": i}) for i in range(6)])
    report = require_intact(path, signer.public_key)
    assert (report.entries, report.checkpoints, report.last_checkpoint, report.unsigned) == (9, 3, 8, 0)
    audit_log.close()
    assert path.read_bytes().count(b"\n") == 9  # closing adds nothing


def test_a_writer_continues_the_chain_after_reopening(path: Path, signer: Signer) -> None:
    write(path, signer, 3, every=2)
    write(path, signer, 3, every=2)
    got = entries(path)
    assert [e["seq"] for e in got] == list(range(len(got)))
    require_intact(path, signer.public_key)
    since = 0
    for e in got:  # the checkpoint count carries over the reopen
        since = 0 if e["event"] == CHECKPOINT else since + 1
        assert since <= 2


def test_the_one_shot_append_leaves_the_log_signed(path: Path, signer: Signer) -> None:
    for i in range(3):
        entry = log.append(path, signer, "waiver.request", "alice", {"i": i}, at=T0)
        assert entry["event"] == "waiver.request" and entry["at"] == "2026-11-25T12:00:00.000000Z"
    got = entries(path)
    assert [e["event"] for e in got] == [CHECKPOINT] + ["waiver.request", CHECKPOINT] * 3
    assert require_intact(path, signer.public_key).unsigned == 0


def test_reserved_events_and_bad_data_are_refused_and_nothing_is_written(path: Path,
                                                                          signer: Signer) -> None:
    with AuditLog(path, signer, clock=Clock()) as audit_log:
        with pytest.raises(ValueError, match="checkpoint"):
            audit_log.append(CHECKPOINT, "mallory", {})
        with pytest.raises(ValueError):
            audit_log.append("audit", "", {})
        with pytest.raises(LogWriteError, match="refused"):
            audit_log.append("audit", "alice", {"x": object()})
        with pytest.raises(LogWriteError, match="refused"):
            audit_log.append("audit", "alice", {}, at=datetime(2026, 1, 1))  # naive time
        assert path.read_bytes() == b""
        audit_log.append("audit", "alice", {"ok": True})
    assert [e["seq"] for e in entries(path)] == [0, 1, 2]


def test_appending_to_a_damaged_tail_is_refused(path: Path, signer: Signer) -> None:
    write(path, signer, 2)
    path.write_bytes(path.read_bytes() + b"not json\n")
    with pytest.raises(LogWriteError, match="skydd log verify"):
        log.append(path, signer, "audit", "alice", {})


def test_a_missing_log_cannot_be_verified(tmp_path: Path, signer: Signer) -> None:
    with pytest.raises(FileNotFoundError):
        verify_log(tmp_path / "absent.log", signer.public_key)


def test_small_read_chunks_give_the_same_answers(path: Path, signer: Signer,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Tail scans and verification read in chunks; lines that straddle chunks are handled."""
    monkeypatch.setattr(log_format, "CHUNK", 97)
    with AuditLog(path, signer, clock=Clock(), checkpoint_every=7) as audit_log:
        audit_log.append_many([("audit", "alice", {"i": i}) for i in range(5)])
    for i in range(4):  # reopen each time: the head and the count since the checkpoint come from the tail
        AuditLog(path, signer, clock=Clock(), checkpoint_every=7).append_many(
            [("audit", "alice", {"i": i, "pad": "x" * (40 * i)}) for _ in range(3)])
    got = entries(path)
    since = 0
    for e in got:
        since = 0 if e["event"] == CHECKPOINT else since + 1
        assert since <= 7
    report = require_intact(path, signer.public_key)
    assert report.entries == len(got) and report.unsigned == since
    raw = lines(path)
    del raw[9]
    path.write_bytes(b"".join(raw))
    p = verify_log(path, signer.public_key).problem
    assert p is not None and (p.kind, p.seq, p.line) == (Problem.REMOVED, 9, 10)
