"""The audit log: verify a 1,000,000-entry log; append 20,000 entries durably with group commit.

Targets (issue 2): verify ≥ 50,000 entries/s; durable group-commit appends ≥ 20,000 entries/s.
Set SKYDD_BENCH_LOG_ENTRIES to verify a smaller log on a slow machine.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.log import AuditLog, verify_log
from audit.signing import Signer

VERIFY_ENTRIES = int(os.environ.get("SKYDD_BENCH_LOG_ENTRIES", "1000000"))
APPEND_ENTRIES = 20_000
VERIFY_TARGET = 50_000
APPEND_TARGET = 20_000


def item(i: int) -> tuple[str, str, dict[str, object]]:
    """About the size of a real audit entry (~330 bytes as a line)."""
    return ("audit", "alice", {"report": f"{i:032x}", "status": "noncompliant",
                               "out": f"/var/lib/skydd/reports/20261125T120000Z-{i:08x}",
                               "selection": {"levels": ["a", "b", "c", "d", "e"], "controls": [],
                                             "site": None}})


def line(label: str, rate: float, target: float | None = None, unit: str = "entries/s") -> None:
    mark = "" if target is None else f"   target ≥ {target:,.0f}  {'ok' if rate >= target else 'MISSED'}"
    print(f"   {label:<46} {rate:>12,.0f} {unit}{mark}")


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


def bench_append(tmp: Path, signer: Signer) -> None:
    for batch in (100, 1000):
        path = tmp / f"batches-{batch}.log"
        with AuditLog(path, signer) as audit_log:
            start = time.perf_counter()
            for base in range(0, APPEND_ENTRIES, batch):
                audit_log.append_many(item(i) for i in range(base, base + batch))
            rate = APPEND_ENTRIES / (time.perf_counter() - start)
        line(f"durable append_many, {batch:,} per fdatasync", rate, APPEND_TARGET)

    path = tmp / "threads.log"
    threads, per = 64, APPEND_ENTRIES // 64
    with AuditLog(path, signer) as audit_log:
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
    line(f"durable append() from {threads} threads (group commit)", rate)

    path = tmp / "single.log"
    n = 1_000
    with AuditLog(path, signer) as audit_log:
        start = time.perf_counter()
        for i in range(n):
            audit_log.append(*item(i))
        rate = n / (time.perf_counter() - start)
    line("durable append(), one fdatasync each (reference)", rate)
    print(f"   {'  so one append with its fdatasync takes':<46} {1000 / rate:>12.2f} ms")
    for name in ("batches-100.log", "batches-1000.log", "threads.log", "single.log"):
        assert verify_log(tmp / name, signer.public_key).intact


def main() -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    with tempfile.TemporaryDirectory(prefix="skydd-bench-log-", dir=os.environ.get("SKYDD_BENCH_TMP")) as d:
        print(f"   in {d}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at start")
        bench_append(Path(d), signer)
        bench_verify(Path(d), signer)


if __name__ == "__main__":
    main()
