"""The audit log: durable appends with group commit; verify a 1,000,000-entry log.

Targets (issues 2 and 14): durable appends ≥ 20,000 entries/s, every entry covered by a
signed checkpoint and an ``fdatasync`` before its ``append`` returns; verify ≥ 50,000 entries/s.
Concurrent ``append()`` callers are measured at 1, 8 and 32 threads, with the pipelined group
commit and with a pipeline of 1 (each batch synced before the next is written) for comparison,
and the batch sizes achieved. Little's law bounds them: N callers, each waiting for its own
sync, reach at most N / (sync latency) entries/s, so the fdatasync latency of the disk is
measured and printed too. Set SKYDD_BENCH_LOG_ENTRIES to verify a smaller log on a slow machine.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.log import AuditLog, CommitStats, verify_log
from audit.log.writer import PIPELINE_DEPTH
from audit.signing import Signer

VERIFY_ENTRIES = int(os.environ.get("SKYDD_BENCH_LOG_ENTRIES", "1000000"))
APPEND_ENTRIES = 20_000
VERIFY_TARGET = 50_000
APPEND_TARGET = 20_000
CONCURRENCY = ((1, 500), (8, 8_000), (32, APPEND_ENTRIES))  # (threads, entries)


def item(i: int) -> tuple[str, str, dict[str, object]]:
    """About the size of a real audit entry (~330 bytes as a line)."""
    return ("audit", "alice", {"report": f"{i:032x}", "status": "noncompliant",
                               "out": f"/var/lib/skydd/reports/20261125T120000Z-{i:08x}",
                               "selection": {"levels": ["a", "b", "c", "d", "e"], "controls": [],
                                             "site": None}})


def line(label: str, rate: float, target: float | None = None, unit: str = "entries/s") -> None:
    mark = "" if target is None else (f"   {rate / target:.2f}× target ≥ {target:,.0f}  "
                                      f"{'ok' if rate >= target else 'MISSED'}")
    print(f"   {label:<46} {rate:>12,.0f} {unit}{mark}", flush=True)


def generate(path: Path, signer: Signer, n: int) -> float:
    start = time.perf_counter()
    with AuditLog(path, signer) as audit_log:
        for base in range(0, n, 10_000):
            audit_log.append_many(item(i) for i in range(base, min(n, base + 10_000)))
            if base and base % 200_000 == 0:
                print(f"   … {base:,} entries written", flush=True)
    return n / (time.perf_counter() - start)


def bench_verify(tmp: Path, signer: Signer) -> None:
    path = tmp / "big.log"
    rate = generate(path, signer, VERIFY_ENTRIES)
    line(f"generate {VERIFY_ENTRIES:,} (append_many, 10k per batch)", rate)
    print(f"   log size {path.stat().st_size / 1e6:,.0f} MB", flush=True)
    start, start_cpu = time.perf_counter(), time.process_time()
    report = verify_log(path, signer.public_key)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    assert report.intact, report.problem  # a broken bench log is a bug, not a figure
    line(f"verify {report.entries:,} entries, {report.checkpoints:,} checkpoints", report.entries / elapsed,
         VERIFY_TARGET)
    line("verify, per CPU second (excludes time-slicing)", report.entries / cpu)


def sync_latency(tmp: Path, n: int = 50) -> float:
    """The median seconds of one ``fdatasync`` after appending one ~5 kB batch."""
    fd = os.open(tmp / "sync.probe", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        times = []
        for _ in range(n):
            os.write(fd, b"x" * 5000)
            start = time.perf_counter()
            os.fdatasync(fd)
            times.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        (tmp / "sync.probe").unlink()
    return statistics.median(times)


def threaded(path: Path, signer: Signer, threads: int, total: int, pipeline: int | None
             ) -> tuple[float, CommitStats]:
    """Entries/s of ``threads`` callers each appending one entry at a time, durably."""
    per = max(1, total // threads)
    with AuditLog(path, signer, pipeline=pipeline or PIPELINE_DEPTH) as audit_log:
        barrier = threading.Barrier(threads + 1)

        def work(k: int) -> None:
            barrier.wait()
            for i in range(per):
                audit_log.append(*item(k * per + i))

        pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
        for t in pool:
            t.start()
        barrier.wait()
        start = time.perf_counter()
        for t in pool:
            t.join()
        rate = threads * per / (time.perf_counter() - start)
        return rate, audit_log.stats


def bench_append(tmp: Path, signer: Signer) -> None:
    latency = sync_latency(tmp)
    print(f"   fdatasync of a 5 kB append, one at a time: {latency * 1000:.2f} ms median "
          f"(load average {os.getloadavg()[0]:.1f})", flush=True)
    best: dict[str, float] = {}
    for threads, total in CONCURRENCY:
        for label, pipeline in (("pipelined", None), ("pipeline 1", 1)):
            path = tmp / f"threads-{threads}-{label.replace(' ', '')}.log"
            rate, stats = threaded(path, signer, threads, total, pipeline)
            assert verify_log(path, signer.public_key).intact
            name = f"append() x{threads} threads, {label}"
            best[name] = rate
            line(name, rate, APPEND_TARGET if threads > 1 and pipeline is None else None)
            print(f"   {'':<6}batches: mean {stats.mean_batch:,.1f}, largest {stats.largest:,}, "
                  f"{stats.commits:,} commits, up to {stats.overlap} syncing at once; per commit "
                  f"{stats.mean_write * 1e3:.2f} ms writing, {stats.mean_sync * 1e3:.2f} ms in "
                  f"fdatasync", flush=True)

    for batch in (100, 1000):
        path = tmp / f"batches-{batch}.log"
        with AuditLog(path, signer) as audit_log:
            start = time.perf_counter()
            for base in range(0, APPEND_ENTRIES, batch):
                audit_log.append_many(item(i) for i in range(base, base + batch))
            rate = APPEND_ENTRIES / (time.perf_counter() - start)
        assert verify_log(path, signer.public_key).intact
        best[f"append_many, {batch:,} per fdatasync"] = rate
        line(f"append_many, {batch:,} per fdatasync (one caller)", rate, APPEND_TARGET)

    top = max(rate for name, rate in best.items() if "x32" in name and "pipelined" in name)
    print(f"   goal: durable append ≥ {APPEND_TARGET:,}/s from concurrent callers: 32 threads "
          f"reached {top:,.0f}/s = {top / APPEND_TARGET:.2f}× the goal "
          f"({'met' if top >= APPEND_TARGET else 'MISSED'}; load average {os.getloadavg()[0]:.1f})")


def main() -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    with tempfile.TemporaryDirectory(prefix="skydd-bench-log-", dir=os.environ.get("SKYDD_BENCH_TMP")) as d:
        print(f"   in {d}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at start")
        bench_append(Path(d), signer)
        bench_verify(Path(d), signer)


if __name__ == "__main__":
    main()
