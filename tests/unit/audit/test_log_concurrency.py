"""The audit log with concurrent writers: real processes, real threads, real fsync."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from audit import log
from audit.log import CHECKPOINT, AuditLog, require_intact, verify_log
from audit.signing import Signer, load_signer

REPO = Path(__file__).resolve().parents[3]

WRITER = """
import sys
from pathlib import Path
from audit.log import AuditLog
from audit.signing import load_signer

home, name, n, batch, pad = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
with AuditLog(home / "audit.log", load_signer(home), checkpoint_every=50) as audit_log:
    for start in range(0, n, batch):
        items = [("test.write", name, {"i": i, "pad": "x" * pad}) for i in range(start, min(n, start + batch))]
        if batch == 1:
            audit_log.append(*items[0])
        else:
            audit_log.append_many(items)
"""


def writers(home: Path, count: int, n: int, batch: int = 1, pad: int = 0) -> list[subprocess.Popen]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return [subprocess.Popen([sys.executable, "-c", WRITER, str(home), f"w{k}", str(n), str(batch),
                              str(pad)], env=env, stderr=subprocess.PIPE)
            for k in range(count)]


def wait(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        _, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr.decode()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    load_signer(home)  # made once, before writers race to make it
    return home


def test_processes_appending_at_once_keep_one_intact_chain(home: Path) -> None:
    wait(writers(home, 4, 150))
    signer = load_signer(home)
    report = require_intact(home / "audit.log", signer.public_key)
    got = [json.loads(x) for x in (home / "audit.log").read_text().splitlines()]
    written = sorted((e["actor"], e["data"]["i"]) for e in got if e["event"] == "test.write")
    assert written == sorted((f"w{k}", i) for k in range(4) for i in range(150))
    assert [e["seq"] for e in got] == list(range(len(got)))
    since = 0
    for e in got:  # every writer re-reads the tail, so the interval holds across processes
        since = 0 if e["event"] == CHECKPOINT else since + 1
        assert since <= 50
    assert report.unsigned == 0 and got[-1]["event"] == CHECKPOINT


def test_a_reader_never_sees_a_partial_line(home: Path) -> None:
    """Writers append ~400 kB batches while the verifier reads: it sees whole entries only."""
    procs = writers(home, 2, 600, batch=50, pad=8000)
    public_key = load_signer(home).public_key
    reads = 0
    try:
        while any(p.poll() is None for p in procs):
            if (home / "audit.log").exists():
                report = verify_log(home / "audit.log", public_key)
                assert report.problem is None, report.problem
                reads += 1
            time.sleep(0.01)
    finally:
        wait(procs)
    assert reads > 0
    assert require_intact(home / "audit.log", public_key).entries >= 1200


def test_threads_are_group_committed_and_every_append_is_durable(home: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    syncs = 0
    real = os.fdatasync

    def counting(fd: int) -> None:
        nonlocal syncs
        syncs += 1
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    signer: Signer = load_signer(home)
    results: dict[int, list[dict]] = {}
    start = threading.Barrier(8)
    with AuditLog(home / "audit.log", signer) as audit_log:
        def work(k: int) -> None:
            start.wait()
            results[k] = [audit_log.append("test.write", f"t{k}", {"i": i}) for i in range(100)]

        threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        on_disk = (home / "audit.log").read_text().splitlines()
        for mine in results.values():  # each append returned after its line was written
            for entry in mine:
                assert json.loads(on_disk[entry["seq"]])["data"] == entry["data"]
    assert sorted(e["seq"] for r in results.values() for e in r) == sorted(
        {e["seq"] for r in results.values() for e in r})
    assert syncs < 800  # fewer flushes than appends: batches formed
    report = require_intact(home / "audit.log", signer.public_key)
    assert report.entries == 800 + report.checkpoints


FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from audit.log import AuditLog, LogWriteError
from audit.signing import load_signer

home = Path(sys.argv[1])
path = home / "audit.log"
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
audit_log = AuditLog(path, load_signer(home))
audit_log.append("test.write", "w", {"i": 0})
size = path.stat().st_size
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 4096, size + 4096))
try:
    audit_log.append_many([("test.write", "w", {"i": i, "pad": "x" * 500}) for i in range(1, 40)])
except LogWriteError as err:
    print("refused:", err)
assert path.stat().st_size == size, (path.stat().st_size, size)
"""


def test_a_write_that_fails_half_way_leaves_nothing_half_written(home: Path) -> None:
    """The file-size limit stops the batch after 4 kB: the log is cut back to where it began."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-c", FULL_DISK, str(home)], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "refused: cannot append to the audit log" in r.stdout
    report = verify_log(home / "audit.log", load_signer(home).public_key)
    assert report.intact and report.head_seq == 2  # genesis, the entry before the failed batch, its checkpoint


def test_concurrent_appends_pipeline_and_every_caller_returns_after_its_own_sync(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches are written while earlier ones sync, and a caller never returns before an
    fdatasync that began after its line was written has finished."""
    covered: dict[int, int] = {}  # seq -> end of the checkpoint that signs it
    synced_sizes: list[int] = []  # file sizes at the start of each finished fdatasync
    real = os.fdatasync

    def recording(fd: int) -> None:
        size = os.fstat(fd).st_size  # everything written so far is covered by this sync
        real(fd)
        synced_sizes.append(size)

    monkeypatch.setattr(os, "fdatasync", recording)
    signer = load_signer(home)
    path = home / "audit.log"
    with AuditLog(path, signer) as audit_log:
        start = threading.Barrier(16)

        def work(k: int) -> None:
            start.wait()
            for i in range(40):
                entry = audit_log.append("test.write", f"t{k}", {"i": i})
                raw = path.read_bytes().splitlines(keepends=True)
                seal = next(n for n in range(entry["seq"] + 1, len(raw))
                            if json.loads(raw[n])["event"] == CHECKPOINT)
                end = len(b"".join(raw[:seal + 1]))
                assert max(synced_sizes) >= end  # its line and its checkpoint were synced
                covered[entry["seq"]] = end

        threads = [threading.Thread(target=work, args=(k,)) for k in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = audit_log.stats
    assert len(covered) == 640
    assert stats.entries == 640 and stats.commits < 640 and stats.largest > 1
    report = require_intact(path, signer.public_key)
    assert report.unsigned == 0 and report.entries == 640 + report.checkpoints


def test_a_failed_sync_fails_the_batches_written_after_it_and_cuts_them_off(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch 1's fdatasync is slow and then fails while batch 2 was written and synced behind
    it: both callers get the error, the file is cut back to before batch 1, and the chain goes
    on intact from there."""
    import errno

    signer = load_signer(home)
    path = home / "audit.log"
    audit_log = AuditLog(path, signer)
    audit_log.append("test.write", "before", {"i": 0})
    before = path.read_bytes()
    real = os.fdatasync
    calls = 0
    first_waits, second_done, release = threading.Event(), threading.Event(), threading.Event()

    def failing_first(fd: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            first_waits.set()
            assert release.wait(30)
            raise OSError(errno.EIO, "Input/output error")
        real(fd)
        if calls == 2:
            second_done.set()

    monkeypatch.setattr(os, "fdatasync", failing_first)
    errors: dict[str, BaseException] = {}

    def write(name: str) -> None:
        try:
            audit_log.append("test.write", name, {"i": 1})
        except log.LogWriteError as err:
            errors[name] = err

    first = threading.Thread(target=write, args=("first",))
    first.start()
    assert first_waits.wait(30)
    second = threading.Thread(target=write, args=("second",))
    second.start()
    assert second_done.wait(30)  # batch 2 was written and synced while batch 1 still synced
    assert path.read_bytes().count(b"\n") == before.count(b"\n") + 4
    release.set()
    first.join(30)
    second.join(30)
    assert set(errors) == {"first", "second"}
    assert "Input/output error" in str(errors["first"]) and "earlier write failed" in str(errors["second"])
    assert path.read_bytes() == before  # nothing of either batch is left
    monkeypatch.setattr(os, "fdatasync", real)
    entry = audit_log.append("test.write", "after", {"i": 2})
    audit_log.close()
    assert entry["seq"] == before.count(b"\n")
    report = require_intact(path, signer.public_key)
    assert report.unsigned == 0 and report.entries == before.count(b"\n") + 2
