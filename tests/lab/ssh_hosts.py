"""Real OpenSSH servers in network namespaces of the tests' own (``skt-*``), for the SSH
transport and the collectors over SSH. Each host: a veth pair from the root namespace
(198.51.100.0/24, TEST-NET-2, one /30 per host), Debian's ``/usr/sbin/sshd -D`` on the
namespace side only (in a mount namespace where ``/root`` is the host's own, as on the lab's
machines), an ed25519 host key from ``ssh-keygen``, key login only. ``Hosts.close``
stops every sshd this module started (by its Popen) and deletes the namespaces, also after a
failure."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from estate.inventory import Connection
from skydd.lab.ssh import MOUNT_AND_EXEC, SSHD, machine_home
from tests.conftest import require_root

_SERIAL = itertools.count()
NET = "198.51.100"


def sh(*cmd: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, input=input, timeout=30)


def keypair(path: Path) -> str:
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path))
    return (path.with_suffix(".pub") if path.suffix else Path(f"{path}.pub")).read_text().strip()


@dataclass
class Host:
    name: str
    namespace: str
    address: str
    folder: Path
    link: str
    proc: subprocess.Popen[bytes] | None = None

    def ns(self, *cmd: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.namespace, *cmd, input=input)

    def host_key(self) -> str:
        return (self.folder / "ssh_host_ed25519_key.pub").read_text().split()[1]

    def accepted_logins(self) -> int:
        log = self.folder / "sshd.log"
        return log.read_text().count("Accepted publickey") if log.exists() else 0

    def start(self) -> None:
        # The host's own /root, as the lab's machines have (skydd/lab/ssh.py); sh execs sshd.
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, "sh", "-ec", MOUNT_AND_EXEC, "sh",
             str(machine_home(self.folder)), "/root", "--", SSHD, "-D", "-f",
             str(self.folder / "sshd_config"), "-E", str(self.folder / "sshd.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.address, 22), 0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd in {self.namespace} did not listen on {self.address}:22")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@dataclass
class Hosts:
    """``prefix`` names the namespaces and links (the tests' ``skt``; the bench's ``skb``);
    ``net`` is the /24 the hosts' /30s come from, starting at ``first`` (default: a block of
    eight hosts picked by the tag, so parallel test runs do not collide)."""

    root: Path
    tag: str = field(default_factory=lambda: f"{os.getpid() % 1000}{next(_SERIAL) % 100:02d}")
    hosts: list[Host] = field(default_factory=list)
    prefix: str = "skt"
    net: str = NET
    first: int | None = None

    def __post_init__(self) -> None:
        self.client_key = self.root / "id_ed25519"
        self.client_pub = keypair(self.client_key)
        self.known_hosts = self.root / "known_hosts"
        self.known_hosts.write_text("")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir

    def add(self, name: str) -> Host:
        i = len(self.hosts)
        ns = f"{self.prefix}-{self.tag}-{i}"
        outer, inner = f"{self.prefix}{self.tag}h{i}", f"{self.prefix}{self.tag}n{i}"
        first = 4 * 8 * (int(self.tag) % 7) if self.first is None else self.first
        base = 4 * i + 1 + first
        if base + 2 > 254:
            raise ValueError(f"{self.net}.0/24 has no /30 left for host {i} (from .{first})")
        host = Host(name, ns, f"{self.net}.{base + 1}", self.root / name, outer)
        host.folder.mkdir(mode=0o700)
        self.hosts.append(host)  # from here on close() removes it
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
        sh("ip", "link", "set", inner, "netns", ns)
        sh("ip", "addr", "add", f"{self.net}.{base}/30", "dev", outer)
        sh("ip", "link", "set", outer, "up")
        host.ns("ip", "addr", "add", f"{host.address}/30", "dev", inner)
        host.ns("ip", "link", "set", inner, "up")
        host.ns("ip", "link", "set", "lo", "up")
        keypair(host.folder / "ssh_host_ed25519_key")
        (host.folder / "authorized_keys").write_text(self.client_pub + "\n")
        (host.folder / "sshd_config").write_text(
            f"ListenAddress {host.address}\nPort 22\n"
            f"HostKey {host.folder}/ssh_host_ed25519_key\nPidFile {host.folder}/sshd.pid\n"
            f"AuthorizedKeysFile {host.folder}/authorized_keys\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nLogLevel INFO\n"
            "MaxStartups 100\n")
        with self.known_hosts.open("a") as f:
            f.write(f"{host.address} ssh-ed25519 {host.host_key()}\n")
        host.start()
        return host

    def connection(self, host: Host, **changes: object) -> Connection:
        fields: dict[str, object] = {"address": host.address, "private_key": f"file:{self.client_key}",
                                     "known_hosts": str(self.known_hosts), "timeout": 5.0}
        return Connection(**{**fields, **changes})

    def close(self) -> None:
        for host in self.hosts:
            try:
                host.stop()
            finally:  # deleting the link is synchronous; the namespace's end goes with it
                subprocess.run(["ip", "link", "del", host.link], capture_output=True)
                subprocess.run(["ip", "netns", "del", host.namespace], capture_output=True)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Hosts]:
    """Real SSH hosts for one test (root): torn down even when the test fails."""
    require_root()
    hosts = Hosts(tmp_path)
    try:
        yield hosts
    finally:
        hosts.close()
