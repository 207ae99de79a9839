"""The SSH transport against real OpenSSH servers in the tests' own namespaces (``skt-*``): one
connection per host, hosts at once, and every way a host can fail is that host's typed error
naming it and the cause while the other hosts succeed. Needs root (namespaces); no lab lock:
nothing here touches the lab's namespaces or ports."""

from __future__ import annotations

import asyncio
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from audit.remote import (
    AuthRefused,
    CommandFailed,
    HostError,
    HostKeyMismatch,
    HostResult,
    Target,
    Timeout,
    UnknownHostKey,
    Unreachable,
    run_on_hosts,
)
from tests.lab.ssh_hosts import Hosts, keypair

RULESET = "table inet {table} {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n  }}\n}}\n"


@pytest.fixture
def three(lab: Hosts) -> list[Target]:
    out = []
    for name in ("fw-a", "fw-b", "fw-c"):
        host = lab.add(name)
        host.ns("nft", "-f", "-", input=RULESET.format(table=f"skt_{name.replace('-', '_')}"))
        out.append(Target(name, lab.connection(host)))
    return out


def test_commands_and_rulesets_come_from_every_host_over_one_connection_each(
        lab: Hosts, three: list[Target]) -> None:
    started = time.monotonic()
    out = run_on_hosts(three, ["nft -j list ruleset", ["cat", "/proc/sys/net/ipv4/ip_forward"],
                               "sleep 2"], files=["/proc/self/net/dev"])
    took = time.monotonic() - started
    assert set(out) == {"fw-a", "fw-b", "fw-c"}
    for name, result in out.items():
        assert isinstance(result, HostResult), result
        ruleset, forward, _ = result.commands
        assert f'"name": "skt_{name.replace("-", "_")}"' in ruleset.text  # its own namespace's
        assert forward.text.strip() in ("0", "1")
        host = next(h for h in lab.hosts if h.name == name)
        assert f"skt{lab.tag}n" in result.files["/proc/self/net/dev"].decode()
        assert host.accepted_logins() == 1  # three commands and a file, one connection
    assert took < 5, f"hosts ran one after another ({took:.1f} s for three 2 s sleeps)"


def test_a_stopped_sshd_is_that_hosts_error_and_the_others_succeed(lab: Hosts, three) -> None:
    lab.hosts[1].stop()
    out = run_on_hosts(three, ["nft -j list ruleset"])
    assert isinstance(out["fw-a"], HostResult) and isinstance(out["fw-c"], HostResult)
    err = out["fw-b"]
    assert isinstance(err, Unreachable)
    assert str(err).startswith(f"fw-b ({lab.hosts[1].address}:22): unreachable: ")
    assert "Connection refused" in str(err)


def test_a_wrong_pinned_key_is_a_mismatch_naming_both_fingerprints(lab: Hosts, tmp_path: Path) -> None:
    host = lab.add("fw-a")
    other = keypair(tmp_path / "other_host_key").split()[1]
    pinned = tmp_path / "wrong_known_hosts"
    pinned.write_text(f"{host.address} ssh-ed25519 {other}\n")
    out = run_on_hosts([Target("fw-a", lab.connection(host, known_hosts=str(pinned)))], ["true"])
    err = out["fw-a"]
    assert isinstance(err, HostKeyMismatch)
    real = _fingerprint(host.folder / "ssh_host_ed25519_key.pub")
    fake = _fingerprint(tmp_path / "other_host_key.pub")
    assert err.presented.endswith(real) and err.pinned[0].endswith(fake)
    assert "host key mismatch" in str(err) and real in str(err) and fake in str(err)
    assert host.accepted_logins() == 0
    assert pinned.read_text() == f"{host.address} ssh-ed25519 {other}\n"  # never rewritten


def test_an_unpinned_host_is_refused_and_nothing_is_added(lab: Hosts, tmp_path: Path) -> None:
    host = lab.add("fw-a")
    empty = tmp_path / "empty_known_hosts"
    empty.write_text(f"{host.address}0 ssh-ed25519 {host.host_key()}\n")  # another address
    out = run_on_hosts([Target("fw-a", lab.connection(host, known_hosts=str(empty)))], ["true"])
    assert isinstance(out["fw-a"], UnknownHostKey)
    assert _fingerprint(host.folder / "ssh_host_ed25519_key.pub") in str(out["fw-a"])
    assert host.accepted_logins() == 0
    assert empty.read_text().count("\n") == 1


def test_a_key_the_host_does_not_accept_is_auth_refused(lab: Hosts, tmp_path: Path) -> None:
    host = lab.add("fw-a")
    keypair(tmp_path / "stranger")
    out = run_on_hosts([Target("fw-a", lab.connection(host, private_key=f"file:{tmp_path}/stranger"))],
                       ["true"])
    assert isinstance(out["fw-a"], AuthRefused)
    assert "user root" in str(out["fw-a"]) and "stranger" in str(out["fw-a"])


def test_a_failing_command_names_host_status_and_stderr(lab: Hosts, three) -> None:
    out = run_on_hosts(three[:1], ["nft list table inet no_such_table"])
    err = out["fw-a"]
    assert isinstance(err, CommandFailed) and err.exit_status == 1
    assert "no_such_table" in err.command and "No such file or directory" in str(err)


def test_a_host_that_accepts_tcp_but_never_speaks_times_out_within_its_bound(lab: Hosts) -> None:
    host = lab.add("fw-a")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshake; nobody ever answers
    try:
        port = silent.getsockname()[1]
        mute = Target("mute", lab.connection(host, address="127.0.0.1", port=port, timeout=1.5))
        fine = Target("fw-a", lab.connection(host))
        started = time.monotonic()
        out = run_on_hosts([mute, fine], ["true"])
        took = time.monotonic() - started
    finally:
        silent.close()
    assert isinstance(out["mute"], Timeout)
    assert str(out["mute"]).startswith(f"mute (127.0.0.1:{port}): timeout: ")
    assert isinstance(out["fw-a"], HostResult)
    assert 1.4 < took < 3.5


def _fingerprint(pub: Path) -> str:
    import subprocess

    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)], check=True,
                         capture_output=True, text=True).stdout
    return out.split()[1]  # SHA256:...


def test_it_also_runs_from_a_thread_that_already_runs_an_event_loop(lab: Hosts, three) -> None:
    """A caller inside an event loop (a web handler; Playwright's sync API in the same test
    session) must not get "asyncio.run() cannot be called from a running event loop"."""
    async def caller() -> dict[str, object]:
        return dict(run_on_hosts(three, ["true"]))

    with ThreadPoolExecutor(max_workers=1) as pool:  # a thread of its own runs the caller's loop
        out = pool.submit(asyncio.run, caller()).result()
    assert sorted(out) == ["fw-a", "fw-b", "fw-c"]
    assert all(not isinstance(r, HostError) for r in out.values()), out
