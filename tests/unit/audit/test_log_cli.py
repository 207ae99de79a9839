"""``skydd log verify`` through the real console script: exit 0 intact, 1 broken, 2 bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import log
from audit.signing import Signer, load_signer

SKYDD = str(Path(sys.executable).parent / "skydd")


def skydd(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SKYDD_HOME": str(home)}
    return subprocess.run([SKYDD, "log", "verify", *args], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    signer = load_signer(home)
    for i in range(4):
        log.append(home / "audit.log", signer, "waiver.request", "alice", {"i": i})
    return home


def test_an_intact_log_exits_0_and_counts_what_it_verified(home: Path) -> None:
    r = skydd(home)
    assert r.returncode == 0, r.stderr
    assert "intact: 9 entries and 5 checkpoints verified" in r.stdout  # genesis + 4 × (entry, checkpoint)


def test_a_changed_entry_exits_1_naming_it(home: Path) -> None:
    path = home / "audit.log"
    path.write_text(path.read_text().replace('"i":2', '"i":7'))
    r = skydd(home)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "line 6 (seq 5) was changed" in lines[0]


def test_a_torn_line_exits_1_and_says_so(home: Path) -> None:
    path = home / "audit.log"
    path.write_bytes(path.read_bytes()[:-25])
    r = skydd(home)
    assert r.returncode == 1 and "torn last line" in r.stderr and "Traceback" not in r.stderr


def test_json_output_describes_the_problem(home: Path) -> None:
    path = home / "audit.log"
    lines = path.read_bytes().splitlines(keepends=True)
    del lines[2]
    path.write_bytes(b"".join(lines))
    r = skydd(home, "--format", "json")
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["intact"] is False and out["problem"]["kind"] == "removed"
    assert (out["problem"]["seq"], out["problem"]["line"]) == (2, 3)


def test_a_log_checked_against_another_key_exits_1(home: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.pem"
    other.write_bytes(Signer(Ed25519PrivateKey.generate()).public_pem())
    r = skydd(home, "--public-key", str(other))
    assert r.returncode == 1 and "not by the trusted key" in r.stderr


def test_an_explicit_log_and_key_are_used(home: Path, tmp_path: Path) -> None:
    key = tmp_path / "trusted.pem"
    key.write_bytes(load_signer(home).public_pem())
    elsewhere = tmp_path / "copy.log"
    elsewhere.write_bytes((home / "audit.log").read_bytes())
    r = skydd(tmp_path / "empty-home", "--log", str(elsewhere), "--public-key", str(key))
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "empty-home").exists()  # verifying never makes keys


@pytest.mark.parametrize("args, message", [
    (("--log", "/nonexistent/audit.log"), "--log /nonexistent/audit.log: no such file"),
    (("--public-key", "/nonexistent.pem"), "--public-key /nonexistent.pem:"),
    (("--format", "xml"), "--format 'xml'"),
])
def test_bad_input_exits_2_with_one_line(home: Path, args: tuple[str, ...], message: str) -> None:
    r = skydd(home, *args)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and message in r.stderr


def test_a_home_without_keys_exits_2(tmp_path: Path) -> None:
    r = skydd(tmp_path / "nothing")
    assert r.returncode == 2 and "no signing key" in r.stderr


def test_a_public_key_that_is_not_pem_exits_2(home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("hello")
    r = skydd(home, "--public-key", str(bad))
    assert r.returncode == 2 and "not a PEM public key" in r.stderr


def test_a_crashed_writers_unsigned_entries_are_refused_until_an_operator_accepts_them(
        home: Path) -> None:
    """A crash tore the checkpoint at the end of a commit: the entry before it is unsigned.
    Writers refuse to sign over it; ``skydd log seal --accept-unsigned`` records who accepted it."""
    path = home / "audit.log"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(log.UnsignedTailError, match="seq 7 after the last signed checkpoint"):
        log.append(path, load_signer(home), "audit", "alice", {"report": "r1"})
    r = skydd(home)
    assert r.returncode == 1 and "torn last line" in r.stderr
    env = {**os.environ, "SKYDD_HOME": str(home), "SKYDD_ACTOR": "olle"}
    seal = subprocess.run([SKYDD, "log", "seal", "--accept-unsigned", "--reason", "power cut at 03:12"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert seal.returncode == 0, seal.stderr
    assert "accepted seq 7–7 as seq 9 by olle" in seal.stdout
    r = skydd(home)
    assert r.returncode == 0, r.stderr
    assert "seq 8 records a torn last line" in r.stdout
    assert "seq 9 records unsigned entries an operator accepted" in r.stdout
    accepted = json.loads(path.read_text().splitlines()[9])
    assert (accepted["event"], accepted["actor"]) == ("log.accepted", "olle")
    assert accepted["data"]["reason"] == "power cut at 03:12"
    log.append(path, load_signer(home), "audit", "alice", {"report": "r1"})  # writers go on


def test_waiver_commands_leave_a_verifiable_trail(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "SKYDD_HOME": str(home)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SKYDD, *args], capture_output=True, text=True, env=env, timeout=120)

    r = cli("waiver", "request", "d.key-files-private", "--reason", "CA migration",
            "--expires", "2027-01-31T00:00:00Z", "--requester", "alice")
    assert r.returncode == 0, r.stderr
    waiver = json.loads((home / "audit.log").read_text().splitlines()[1])["data"]["id"]
    assert cli("waiver", "approve", waiver, "--approver", "bob").returncode == 0
    got = [json.loads(x) for x in (home / "audit.log").read_text().splitlines()]
    assert [(e["event"], e["actor"]) for e in got if e["event"] != "checkpoint"] == [
        ("waiver.request", "alice"), ("waiver.approve", "bob")]
    r = skydd(home)
    assert r.returncode == 0 and "intact: 5 entries and 3 checkpoints verified" in r.stdout
