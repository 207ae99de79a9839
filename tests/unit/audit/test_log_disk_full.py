"""The audit log's file system full (issue 14, fault 5), on a real tmpfs of 128 KiB.

What must hold: a write to a full file system fails loudly (``LogWriteError`` in process; through
the CLI a non-zero exit with one line on stderr and no traceback); nothing is half-written (the
log keeps exactly the bytes it had, ending at an entry boundary, so no torn line is ever signed
over); ``skydd log verify`` reports the log intact once space is freed; and a later write
succeeds and is itself verifiable.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from audit import log
from audit.signing import load_signer

SKYDD = str(Path(sys.executable).parent / "skydd")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "128k") -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                   check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(directory: Path) -> Path:
    """Fill the file system until ENOSPC; returns the filler file (delete it to free space)."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as fh:
        chunk = b"\0" * 4096
        while True:
            try:
                fh.write(chunk)
            except OSError as err:
                assert err.errno == errno.ENOSPC
                break
        for size in (512, 64, 1):  # the last bytes of the last page too
            while True:
                try:
                    fh.write(b"\0" * size)
                except OSError:
                    break
    return filler


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SKYDD_HOME": str(home), "SKYDD_INVENTORY": ""}  # no roster: one line
    return subprocess.run([SKYDD, *args], capture_output=True, text=True, env=env, timeout=120)


def test_a_full_disk_fails_the_append_and_leaves_the_log_whole(tmp_path: Path) -> None:
    """In process: ``AuditLog.append`` raises ``LogWriteError`` when the disk is full, the file
    keeps exactly its earlier bytes (ends in a newline), verify is intact, and once space is
    freed the same writer appends again."""
    with small_tmpfs(tmp_path / "fs") as fs:
        signer = load_signer(fs / "home")
        path = fs / "home" / "audit.log"
        with log.AuditLog(path, signer) as audit_log:
            for i in range(3):
                audit_log.append("waiver.request", "alice", {"i": i})
            before = path.read_bytes()
            filler = fill(fs)
            with pytest.raises(log.LogWriteError, match="cannot append to the audit log"):
                audit_log.append("waiver.request", "alice", {"big": "x" * 8192})
            assert path.read_bytes() == before  # nothing half-written, nothing torn
            assert before.endswith(b"\n")
            filler.unlink()
            assert log.require_intact(path, signer.public_key).entries >= 3
            audit_log.append("waiver.request", "alice", {"after": "space freed"})
        report = log.require_intact(path, signer.public_key)
        assert report.entries >= 4
        assert path.read_bytes().startswith(before)


def test_the_cli_fails_with_one_line_and_verify_stays_intact(tmp_path: Path) -> None:
    """Through the console script with ``$SKYDD_HOME`` on a full tmpfs: ``skydd waiver request``
    exits non-zero with one line on stderr and no traceback, the log is byte-for-byte what it
    was, ``skydd log verify`` exits 0 after space is freed, and the next request succeeds."""
    with small_tmpfs(tmp_path / "home") as home:
        request = ("waiver", "request", "d.key-files-private", "--reason", "CA migration",
                   "--expires", "2027-01-31T00:00:00Z", "--requester", "alice")
        first = cli(home, *request)
        assert first.returncode == 0, first.stderr
        before = (home / "audit.log").read_bytes()
        filler = fill(home)
        r = cli(home, *request[:4], "x" * 20000, *request[5:])
        assert r.returncode != 0
        assert "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "No space left on device" in r.stderr, r.stderr
        assert (home / "audit.log").read_bytes() == before
        filler.unlink()
        v = cli(home, "log", "verify")
        assert v.returncode == 0 and "intact" in v.stdout, v.stdout + v.stderr
        again = cli(home, *request)
        assert again.returncode == 0, again.stderr
        v = cli(home, "log", "verify")
        assert v.returncode == 0 and "intact" in v.stdout, v.stdout + v.stderr
