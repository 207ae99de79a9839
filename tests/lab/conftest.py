"""Lab fixtures: one real service per session, started through ``skydd.lab`` and stopped at the
end. All lab tests share one ``SKYDD_HOME`` (``lab_home``). In CI a service that cannot start
fails the tests that need it; outside CI as non-root the lab tests skip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.lab.ssh_hosts import lab  # noqa: F401 (fixture: real SSH hosts of a test's own; modules may override)

# The lab services started this session (``ensure_lab``); ``lab_home`` (tests/conftest.py, one
# home for every lab and browser test) stops them at the end.
_started: list[Any] = []


def ensure_lab(name: str, home: Path) -> dict[str, Any]:
    """Bring one lab service up (once per session, again if a test took it down) and return its
    status."""
    from skydd.lab import services

    (svc,) = services(home, [name])
    started = any(s.name == name for s in _started)
    # A module that takes the lab down itself (test_lab_ssh.py) leaves it down for the next one.
    if not started or svc.status()["state"] != "up":
        svc.up(lambda msg: print(f"lab {name}: {msg}"))
    if not started:
        _started.append(svc)
    status = svc.status()
    assert status["state"] == "up", f"lab service {name} is not up: {status}"
    return status


def ns_suricata_pids(namespace: str) -> list[int]:
    """Suricata processes in a lab namespace (the tests look into the lab's machines directly)."""
    import subprocess

    out = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True).stdout
    found = []
    for pid in (p for p in out.split() if p.isdigit()):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm.startswith("Suricata") or comm == "suricata":
            found.append(int(pid))
    return sorted(found)


def ns_bound_queues(namespace: str) -> list[dict[str, int]]:
    """The NFQUEUE bindings in a lab namespace."""
    import subprocess

    from audit.collectors.suricata import parse_queues

    return parse_queues(subprocess.run(["ip", "netns", "exec", namespace, "cat",
                                        "/proc/net/netfilter/nfnetlink_queue"],
                                       capture_output=True, text=True).stdout)
