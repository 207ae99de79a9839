"""The Suricata collector's process scan over SSH (``PIDS_SCRIPT``), run by real shells here.

The scan reads ``comm`` with ``read`` and compares network namespaces with ``test -ef`` (no fork
per process); it must find exactly what the older forking scan found: the Suricata processes
sharing the shell's network stack, with their argv, and none in another network stack.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from audit.collectors.suricata import PIDS_SCRIPT, PIDS_SCRIPT_FORKING, parse_pids

SHELLS = [s for s in ("/bin/sh", "/bin/bash") if Path(s).exists()]


def _started(argv: list[str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # until the exec is done and comm is the new program
        try:
            if Path(f"/proc/{proc.pid}/comm").read_text().strip() == "suricata":
                return proc
        except OSError:
            pass
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"{argv[0]} did not start")


@pytest.fixture
def fake_suricata(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process whose comm is ``suricata`` (a copy of sleep)."""
    exe = tmp_path / "suricata"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", exe)
    proc = _started([str(exe), "60"])
    yield proc
    proc.kill()
    proc.wait()


def scan(shell: str, script: str) -> list[dict[str, object]]:
    out = subprocess.run([shell, "-c", script], capture_output=True, text=True, timeout=30,
                         check=True)
    assert out.stderr == "", out.stderr
    return parse_pids(out.stdout)


@pytest.mark.parametrize("shell", SHELLS)
def test_finds_the_process_with_its_argv_like_the_forking_scan(
        shell: str, fake_suricata: subprocess.Popen[bytes], tmp_path: Path) -> None:
    found = scan(shell, PIDS_SCRIPT)
    mine = [p for p in found if p["pid"] == fake_suricata.pid]
    assert mine == [{"pid": fake_suricata.pid, "cmdline": [str(tmp_path / "suricata"), "60"]}]
    assert found == scan(shell, PIDS_SCRIPT_FORKING)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="a second network stack needs root and unshare")
@pytest.mark.parametrize("shell", SHELLS)
def test_ignores_suricata_in_another_network_namespace(shell: str, tmp_path: Path) -> None:
    exe = tmp_path / "suricata"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", exe)
    proc = subprocess.Popen(["unshare", "--net", str(exe), "60"], stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if Path(f"/proc/{proc.pid}/comm").read_text().strip() == "suricata":
                break
            time.sleep(0.02)
        else:
            raise AssertionError("the process in its own network stack did not start")
        pids = [p["pid"] for p in scan(shell, PIDS_SCRIPT)]
        assert proc.pid not in pids
        assert pids == [p["pid"] for p in scan(shell, PIDS_SCRIPT_FORKING)]
    finally:
        proc.kill()
        proc.wait()
