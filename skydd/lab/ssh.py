"""OpenSSH servers for the machines the lab plays: one ``sshd`` per host namespace, listening on
the host's management address only, key authentication only.

Files (``$SKYDD_HOME/lab/ssh/``):

* ``id_ed25519`` (0600) and ``id_ed25519.pub``: the controller's client key, made once and kept
  across ``lab down`` (a new one only when it is missing);
* ``known_hosts``: one pinned line per host address (``<address> ssh-ed25519 AAAA…``);
* ``<namespace>/``: the host's ``sshd_config``, host key, ``authorized_keys`` (the controller's
  public key), ``sshd.pid`` and ``sshd.log``, ``run-postgresql/``: the machine's own
  ``/run/postgresql``, and ``root-home/``: the machine's own ``/root``.

Each sshd runs in a mount namespace of its own (``ip netns exec`` makes one) where
``/run/postgresql``, Debian's folder for PostgreSQL's local socket, is that host's
``run-postgresql/``: the lab's machines share one file system, and a server started on the
machine (``on_machine``, or over SSH by the ``pg_mirror`` role) finds its own socket where Debian
puts it. From the root namespace the socket is in ``machine_socket_dir``. Likewise ``/root`` is
the machine's ``root-home/`` with Debian's fresh root dotfiles: a login on a lab machine runs a
Debian machine's shell set-up, not the controller's (whose ``.bashrc`` may start a Python version
manager on every command, tens of processes per SSH session).

``stop`` ends every sshd the lab started (by its pid file, after checking the process is that
sshd) and removes the host folders and ``known_hosts``. ``stop_host`` and ``restart_host`` stop
and start one host's sshd with its files kept (the lab tests take one host off the network).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from .errors import LabError
from .management import ManagedHost, run

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")  # sshd's privilege separation directory (Debian's path)
HOST_KEY = "ssh_host_ed25519_key"
DEBIAN_DOTFILES = Path("/usr/share/base-files")  # dot.bashrc, dot.profile: a fresh root's
# Bind each "<machine's folder> <shared path>" pair, then run what follows "--".
MOUNT_AND_EXEC = 'while [ "$1" != -- ]; do mount --bind "$1" "$2"; shift 2; done; shift; exec "$@"'


def ssh_dir(home: Path) -> Path:
    return home / "lab" / "ssh"


def client_key(home: Path) -> Path:
    return ssh_dir(home) / "id_ed25519"


def known_hosts(home: Path) -> Path:
    return ssh_dir(home) / "known_hosts"


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def new_keypair(path: Path, comment: str) -> str:
    """Write an ed25519 key in OpenSSH format to ``path`` (0600) and ``path.pub``; return the
    public key line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    _write_private(path, key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.OpenSSH,
                                           serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    line = f"{public} {comment}"
    path.with_name(path.name + ".pub").write_text(line + "\n")
    return line


def ensure_client_key(home: Path) -> str:
    """The controller's public key line; the key pair is made on first use only."""
    key = client_key(home)
    pub = key.with_name(key.name + ".pub")
    ssh_dir(home).mkdir(parents=True, exist_ok=True)
    os.chmod(ssh_dir(home), 0o700)
    if key.exists() and pub.exists():
        os.chmod(key, 0o600)
        return pub.read_text().strip()
    return new_keypair(key, "skydd-controller@lab")


def sshd_config(host: ManagedHost, folder: Path) -> str:
    """The host's sshd_config: its management address only, keys only, nothing forwarded."""
    return "\n".join([
        f"# sshd of the lab host {host.name} (namespace {host.namespace}); made by skydd lab up",
        f"ListenAddress {host.address}:22",
        "AddressFamily inet",
        f"HostKey {folder / HOST_KEY}",
        f"PidFile {folder / 'sshd.pid'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}",
        "PubkeyAuthentication yes",
        "PermitRootLogin prohibit-password",
        "AllowUsers root",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "HostbasedAuthentication no",
        "PermitEmptyPasswords no",
        "UsePAM no",
        # The lab's folders may sit below a world-writable directory (/tmp); the files sshd
        # reads are the lab's own, 0600 in 0700 folders.
        "StrictModes no",
        "AllowAgentForwarding no",
        "AllowTcpForwarding no",
        "X11Forwarding no",
        "PermitTunnel no",
        "PrintMotd no",
        "MaxStartups 50:30:100",
        "MaxSessions 20",
        "LoginGraceTime 20",
        "LogLevel VERBOSE",
        "Subsystem sftp internal-sftp",
        "",
    ])


def host_dir(home: Path, host: ManagedHost) -> Path:
    return ssh_dir(home) / host.namespace


def start(home: Path, hosts: list[ManagedHost], timeout: float = 15) -> dict[str, str]:
    """Make the keys and start one sshd per host; return address → known_hosts line."""
    if not Path(SSHD).exists():
        raise LabError(f"{SSHD} is missing: install Debian's openssh-server (make deps)")
    client = ensure_client_key(home)
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    pinned: dict[str, str] = {}
    for h in hosts:
        folder = host_dir(home, h)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(mode=0o700, parents=True)
        public = new_keypair(folder / HOST_KEY, f"root@{h.namespace}")
        pinned[h.address] = f"{h.address} {' '.join(public.split()[:2])}"
        _write_private(folder / "authorized_keys", (client + "\n").encode())
        (folder / "sshd_config").write_text(sshd_config(h, folder))
        _launch(home, h)
    tmp = known_hosts(home).with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in pinned.values()))
    tmp.replace(known_hosts(home))
    _wait_started(home, hosts, timeout)
    return pinned


MACHINE_PG_RUN = "/run/postgresql"  # Debian's socket folder, as each machine sees it


def machine_socket_dir(home: Path, host: ManagedHost) -> Path:
    """Where the machine's ``/run/postgresql`` is, seen from the root namespace."""
    return host_dir(home, host) / "run-postgresql"


def machine_home(folder: Path) -> Path:
    """The machine's own ``/root`` in ``folder``: Debian's root ``.bashrc`` and ``.profile``."""
    home = folder / "root-home"
    home.mkdir(mode=0o700, exist_ok=True)
    for name in ("bashrc", "profile"):
        source, target = DEBIAN_DOTFILES / f"dot.{name}", home / f".{name}"
        if source.is_file() and not target.exists():
            shutil.copyfile(source, target)
    return home


def _launch(home: Path, host: ManagedHost) -> None:
    """Start the host's sshd in its namespace, with the machine's own ``/run/postgresql`` and
    ``/root`` mounted in its mount namespace, from the files in its folder (it daemonises)."""
    import pwd

    folder = host_dir(home, host)
    run_pg = machine_socket_dir(home, host)
    run_pg.mkdir(mode=0o2775, exist_ok=True)
    try:
        pg = pwd.getpwnam("postgres")
        os.chown(run_pg, pg.pw_uid, pg.pw_gid)
    except KeyError:
        pass  # no PostgreSQL on this machine: the folder stays root's
    os.chmod(run_pg, 0o2775)
    Path(MACHINE_PG_RUN).mkdir(mode=0o2775, exist_ok=True)
    run("ip", "netns", "exec", host.namespace, "sh", "-ec", MOUNT_AND_EXEC, "sh",
        str(run_pg), MACHINE_PG_RUN, str(machine_home(folder)), "/root", "--",
        SSHD, "-f", str(folder / "sshd_config"), "-E", str(folder / "sshd.log"))


def on_machine(home: Path, host: ManagedHost) -> list[str]:
    """The command prefix that runs a program on the machine ``host`` plays: in the network
    and mount namespaces of its sshd (so with its own ``/run/postgresql``), as a session over
    SSH would."""
    pid = _pid(host_dir(home, host))
    if pid is None:
        raise LabError(f"sshd of {host.name} is not running: start the lab network first")
    return ["nsenter", "-t", str(pid), "-m", "-n", "--"]


def _wait_started(home: Path, hosts: list[ManagedHost], timeout: float) -> None:
    """Wait until every host's sshd wrote its pid file (sshd writes it once it listens)."""
    deadline = time.monotonic() + timeout
    waiting = list(hosts)
    while waiting and time.monotonic() < deadline:
        waiting = [h for h in waiting if _pid(host_dir(home, h)) is None]
        if waiting:
            time.sleep(0.05)
    if waiting:
        h = waiting[0]
        log = host_dir(home, h) / "sshd.log"
        last = log.read_text().strip().splitlines()[-1:] if log.exists() else []
        raise LabError(f"sshd of {h.name} did not start on {h.address}:22 within {timeout:.0f} s"
                       + (f": {last[0]}" if last else f" (see {log})"))


def stop_host(home: Path, host: ManagedHost, timeout: float = 5) -> bool:
    """Stop one host's sshd (its listener, by its pid file) and keep its files, so
    ``restart_host`` brings back the same server with the same pinned host key. Sessions
    already open are not ended. Returns whether it was running."""
    folder = host_dir(home, host)
    pid = _pid(folder)
    if pid is None:
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _pid(folder) is not None:
            time.sleep(0.05)
        if _pid(folder) is None:
            break
    else:
        raise LabError(f"sshd of {host.name} (pid {pid}) did not stop")
    (folder / "sshd.pid").unlink(missing_ok=True)
    return True


def restart_host(home: Path, host: ManagedHost, timeout: float = 15) -> None:
    """Start one host's sshd again as ``start`` does, with the host key and files ``start``
    wrote (so ``known_hosts`` still pins it); a running one is stopped first."""
    folder = host_dir(home, host)
    if not (folder / "sshd_config").exists() or not (folder / HOST_KEY).exists():
        raise LabError(f"sshd of {host.name} was never set up in {folder}: run 'skydd lab up'")
    stop_host(home, host)
    _launch(home, host)
    _wait_started(home, [host], timeout)


def _pid(folder: Path) -> int | None:
    """The pid of the sshd started from ``folder``, if that process still runs."""
    try:
        pid = int((folder / "sshd.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    # sshd rewrites its title ("sshd: /usr/sbin/sshd -f CONFIG ... [listener] ..."), so look
    # for the config path anywhere in it.
    return pid if str(folder / "sshd_config").encode() in cmdline else None


def stop(home: Path) -> int:
    """Stop every sshd the lab started and remove its files; return how many were running."""
    root = ssh_dir(home)
    if not root.exists():
        return 0
    folders = [p for p in root.iterdir() if p.is_dir()]
    running = sum(_pid(f) is not None for f in folders)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for f in folders:
            pid = _pid(f)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        deadline = time.monotonic() + 5  # a zombie has no cmdline, so it counts as gone
        while time.monotonic() < deadline and any(_pid(f) is not None for f in folders):
            time.sleep(0.05)
    for f in folders:
        shutil.rmtree(f, ignore_errors=True)
    known_hosts(home).unlink(missing_ok=True)
    return running


def status(home: Path, hosts: list[ManagedHost]) -> dict[str, Any]:
    running = {h.namespace: _pid(host_dir(home, h)) is not None for h in hosts}
    return {
        "hosts": {h.name: {"namespace": h.namespace, "address": h.address, "port": 22,
                           "up": running[h.namespace]} for h in hosts},
        "up": sum(running.values()),
        "expected": len(hosts),
        "private_key": str(client_key(home)),
        "known_hosts": str(known_hosts(home)),
    }
