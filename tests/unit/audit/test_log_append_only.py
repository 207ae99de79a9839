"""The log cannot be extended, rewritten or cut back without the key (issue 12, ADR 0008).

Each attack is played as someone with write access to ``$SKYDD_HOME`` but without the signing
key would, through the real console script where the issue used it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import log
from audit.errors import VerificationError
from audit.log import CHECKPOINT, GENESIS, LogAnchor, Problem, line_hash, verify_log
from audit.log.checkpoints import checkpoint_entry
from audit.signing import Signer, load_signer
from estate.canonical import canonical_json

SKYDD = str(Path(sys.executable).parent / "skydd")
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def skydd(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SKYDD_HOME": str(home), "SKYDD_ACTOR": "alice"}
    return subprocess.run([SKYDD, *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    signer = load_signer(home)
    for i in range(3):
        log.append(home / "audit.log", signer, "waiver.request", "alice", {"i": i})
    return home  # genesis, then 3 × (entry, checkpoint): 7 lines


def raw(home: Path) -> list[bytes]:
    return (home / "audit.log").read_bytes().splitlines(keepends=True)


def forged(home: Path, seq: int, prev: str, **data: object) -> bytes:
    entry = {"seq": seq, "at": "2026-11-25T12:00:00.000000Z", "event": "waiver.approve",
             "actor": "mallory", "data": data, "prev": prev}
    return canonical_json(entry) + b"\n"


def append_by_hand(home: Path) -> None:
    """An entry with the right seq and prev, written straight into the file."""
    last = raw(home)[-1]
    seq = json.loads(last)["seq"] + 1
    with (home / "audit.log").open("ab") as fh:
        fh.write(forged(home, seq, line_hash(last.rstrip(b"\n")), waiver="w-forged"))


def test_a_hand_appended_entry_is_not_intact(home: Path) -> None:
    append_by_hand(home)
    p = verify_log(home / "audit.log", load_signer(home).public_key).problem
    assert p is not None and (p.kind, p.seq, p.line) == (Problem.UNSIGNED, 7, 8)
    r = skydd(home, "log", "verify")
    assert r.returncode == 1 and "seq 7 (1 entry) after the last signed checkpoint are not signed" in r.stderr


def test_the_next_ordinary_write_refuses_to_sign_over_a_hand_appended_entry(home: Path) -> None:
    append_by_hand(home)
    before = (home / "audit.log").read_bytes()
    r = skydd(home, "waiver", "request", "d.key-files-private", "--reason", "CA migration",
              "--expires", "2027-01-31T00:00:00Z")
    assert r.returncode == 1, r.stdout
    assert "refusing to append" in r.stderr and "not signed" in r.stderr and "Traceback" not in r.stderr
    assert (home / "audit.log").read_bytes() == before  # nothing signed over the forgery
    assert verify_log(home / "audit.log", load_signer(home).public_key).problem.kind is Problem.UNSIGNED


def test_a_writer_refuses_a_tail_checkpoint_signed_by_another_key(home: Path) -> None:
    """A forged checkpoint after a hand-appended entry does not make the tail the writer's."""
    append_by_hand(home)
    last = raw(home)[-1]
    other = Signer(Ed25519PrivateKey.generate())
    cp = checkpoint_entry(other, json.loads(last)["seq"], line_hash(last.rstrip(b"\n")), T0)
    with (home / "audit.log").open("ab") as fh:
        fh.write(canonical_json(cp) + b"\n")
    with pytest.raises(log.LogWriteError, match="not by the trusted key"):
        log.append(home / "audit.log", load_signer(home), "audit", "alice", {})


def test_removing_every_checkpoint_and_rewriting_entry_0_is_not_intact(home: Path,
                                                                       tmp_path: Path) -> None:
    entries = [json.loads(x) for x in raw(home) if json.loads(x)["event"] != CHECKPOINT]
    entries[0]["data"] = {"i": "rewritten"}
    out, prev = [], GENESIS
    for seq, e in enumerate(entries):
        e["seq"], e["prev"] = seq, prev
        line = canonical_json(e)
        out.append(line + b"\n")
        prev = line_hash(line)
    (home / "audit.log").write_bytes(b"".join(out))
    p = verify_log(home / "audit.log", load_signer(home).public_key).problem
    assert p is not None and (p.kind, p.line) == (Problem.UNSIGNED, 1)
    assert "does not start with a signed genesis checkpoint" in p.message
    trusted = tmp_path / "trusted.pem"
    trusted.write_bytes(load_signer(home).public_pem())
    r = skydd(home, "log", "verify", "--public-key", str(trusted))
    assert r.returncode == 1 and "genesis" in r.stderr


def test_keeping_the_genesis_and_rewriting_the_rest_unsigned_is_not_intact(home: Path) -> None:
    lines = raw(home)
    entries = [json.loads(x) for x in lines[1:] if json.loads(x)["event"] != CHECKPOINT]
    out, prev = [lines[0]], line_hash(lines[0].rstrip(b"\n"))
    for seq, e in enumerate(entries, start=1):
        e["seq"], e["prev"] = seq, prev
        line = canonical_json(e)
        out.append(line + b"\n")
        prev = line_hash(line)
    (home / "audit.log").write_bytes(b"".join(out))
    p = verify_log(home / "audit.log", load_signer(home).public_key).problem
    assert p is not None and (p.kind, p.seq) == (Problem.UNSIGNED, 1)


def anchored_report(home: Path, tmp_path: Path) -> Path:
    """A report as helper code writes it: the log's latest anchor under ``"log"``."""
    anchor = log.latest_anchor(home / "audit.log", load_signer(home).public_key)
    assert anchor is not None and anchor.size == 7
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"schema": "skydd.report/1", "log": anchor.to_dict()}))
    return report


def test_deleting_the_last_entry_and_its_checkpoint_is_caught_by_an_anchor(home: Path,
                                                                          tmp_path: Path) -> None:
    report = anchored_report(home, tmp_path)
    r = skydd(home, "log", "verify", "--anchor", str(report))
    assert r.returncode == 0, r.stderr
    assert "line 7 still hashes to" in r.stdout
    (home / "audit.log").write_bytes(b"".join(raw(home)[:-2]))
    assert skydd(home, "log", "verify").returncode == 0  # without an anchor nothing can tell
    r = skydd(home, "log", "verify", "--anchor", str(report))
    assert r.returncode == 1
    assert "the log ends at line 5" in r.stderr and "rollback" in r.stderr
    out = json.loads(skydd(home, "log", "verify", "--anchor", str(report), "--format", "json").stdout)
    assert out["problem"]["kind"] == "rollback"


def test_a_log_rolled_back_and_written_on_is_caught_as_a_fork(home: Path, tmp_path: Path) -> None:
    """Cut back to an earlier checkpoint, then Skydd writes on: the anchored line differs."""
    report = anchored_report(home, tmp_path)
    (home / "audit.log").write_bytes(b"".join(raw(home)[:-2]))
    log.append(home / "audit.log", load_signer(home), "audit", "alice", {"later": True})
    r = skydd(home, "log", "verify", "--anchor", str(report))
    assert r.returncode == 1 and "line 7 hashes to" in r.stderr and "fork" in r.stderr


def test_a_writer_that_sees_the_log_shrink_refuses(home: Path) -> None:
    path = home / "audit.log"
    with log.AuditLog(path, load_signer(home)) as writer:
        writer.append("audit", "alice", {"n": 1})
        cut = b"".join(raw(home)[:-2])
        path.write_bytes(cut)
        with pytest.raises(log.LogWriteError, match="shrank"):
            writer.append("audit", "alice", {"n": 2})
    assert path.read_bytes() == cut


@pytest.mark.parametrize("content, message", [
    (None, "--anchor {}: No such file"),
    ("not json", "not JSON"),
    ('{"schema": "skydd.report/1"}', "the report holds no 'log' anchor"),
    ('{"log": {"size": 0, "head": "sha256:00"}}', "log anchor size 0"),
])
def test_a_bad_anchor_file_exits_2_with_one_line(home: Path, tmp_path: Path, content: str | None,
                                                 message: str) -> None:
    report = tmp_path / "report.json"
    if content is not None:
        report.write_text(content)
    r = skydd(home, "log", "verify", "--anchor", str(report))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert message.format(report) in r.stderr


def test_seal_needs_the_key_and_an_explicit_acceptance(home: Path, tmp_path: Path) -> None:
    assert skydd(home, "log", "seal").returncode == 2
    assert "--reason" in skydd(home, "log", "seal", "--accept-unsigned").stderr
    keyless = tmp_path / "keyless"
    keyless.mkdir()
    (keyless / "audit.log").write_bytes((home / "audit.log").read_bytes())
    r = skydd(keyless, "log", "seal", "--accept-unsigned", "--reason", "x")
    assert r.returncode == 2 and "no signing key" in r.stderr and not (keyless / "keys").exists()
    r = skydd(home, "log", "seal", "--accept-unsigned", "--reason", "nothing to do")
    assert r.returncode == 0 and "nothing to accept" in r.stdout


def test_signed_entries_and_the_latest_anchor(home: Path) -> None:
    path, key = home / "audit.log", load_signer(home).public_key
    assert [e["data"] for e in log.signed_entries(path, key)] == [{"i": 0}, {"i": 1}, {"i": 2}]
    anchor = log.latest_anchor(path, key)
    assert anchor == LogAnchor(7, line_hash(raw(home)[-1].rstrip(b"\n")))
    assert LogAnchor.from_dict(anchor.to_dict()) == anchor
    append_by_hand(home)
    with pytest.raises(VerificationError, match="not signed"):
        log.signed_entries(path, key)
    with pytest.raises(VerificationError, match="not signed"):
        log.latest_anchor(path, key)
    with pytest.raises(ValueError, match="exactly the keys"):
        LogAnchor.from_dict({"size": 1, "head": anchor.head, "extra": 1})
