"""The lab's social-care database: a PostgreSQL primary in the classified segment (``dc``) holding
the care records, and an empty cluster at the fourth site (``site4``); no replication as found.

Each cluster is Debian's PostgreSQL, initialised and run as the ``postgres`` user (``initdb``
refuses root) on the machine its inventory ``connection`` names (the dc and site4 hosts): in that
host's network and mount namespaces (``ssh.on_machine``), listening on every address of the
machine with TLS and on the machine's own ``/run/postgresql``. Skydd's collector connects over
TCP to the management address with TLS verify-full as the monitoring role ``skydd``; the
``pg_mirror`` role works on the machines over SSH; replication itself can only go through the
lab network dc → core → site4. The lab tests reach a cluster as ``postgres`` over its socket
(``socket_dir``, peer authentication for root). The passwords, a lab CA and each cluster's server
certificate are generated here; ``down`` stops both clusters by PID.
"""

from __future__ import annotations

import datetime as dt
import glob
import ipaddress
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from estate.inventory import Database, Inventory

from .errors import LabError
from .management import ManagedHost, managed_hosts
from .service import LabService, Progress
from .ssh import MACHINE_PG_RUN, machine_socket_dir, on_machine

MONITOR_ROLE = "skydd"
PG_HBA = """\
# Written by the Skydd lab. Root may connect over the socket as postgres or skydd; Skydd's
# collector comes over TLS from the management network (the management namespace's address).
local   all          all                    peer map=skydd
local   replication  all                    peer map=skydd
host    all          all   127.0.0.1/32     scram-sha-256
"""
PG_IDENT = """\
skydd   postgres   postgres
skydd   root       postgres
skydd   root       skydd
"""
SEED = """\
CREATE TABLE clients (id serial PRIMARY KEY, hsa_unit text NOT NULL, name text NOT NULL,
                      municipality text NOT NULL);
CREATE TABLE care_plans (id serial PRIMARY KEY, client_id int NOT NULL REFERENCES clients,
                         summary text NOT NULL, valid_from date NOT NULL);
CREATE TABLE visits (id bigserial PRIMARY KEY, client_id int NOT NULL REFERENCES clients,
                     at timestamptz NOT NULL DEFAULT now(), note text NOT NULL);
INSERT INTO clients (hsa_unit, name, municipality) VALUES
  ('SE2120001234-E001', 'Client A', 'torsby'), ('SE2120001234-E002', 'Client B', 'sunne'),
  ('SE2120001234-E003', 'Client C', 'hagfors');
INSERT INTO care_plans (client_id, summary, valid_from) VALUES
  (1, 'Home care, two visits a day', '2026-01-01'), (2, 'Night patrol', '2026-03-01'),
  (3, 'Meals on wheels', '2026-05-01');
INSERT INTO visits (client_id, note) VALUES (1, 'morning visit'), (2, 'night check'),
  (3, 'meal delivered');
"""


@dataclass(frozen=True)
class Cluster:
    """One lab cluster: which system and role, and where it lives."""

    system: str
    role: str  # primary | mirror
    db: Database
    machine: ManagedHost  # the lab host its connection reaches

    @property
    def data(self) -> Path:
        assert self.db.data_dir is not None
        return Path(self.db.data_dir)

    @property
    def log(self) -> Path:
        return Path(self.db.log_file) if self.db.log_file else self.data.parent / "server.log"


def pg_bin() -> Path:
    """The newest installed PostgreSQL server's bin folder."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if not found:
        raise LabError("PostgreSQL server binaries are missing: install the Debian package "
                       "'postgresql' (listed in .ci/debian-packages; run .ci/debian-deps)")
    return Path(found[-1]).parent


def _as_postgres(*cmd: str, machine: list[str] | None = None, timeout: float = 120,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
    full = [*(machine or []), "runuser", "-u", "postgres", "--", *cmd]
    proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"{Path(cmd[0]).name}: {(proc.stderr or proc.stdout).strip()[-400:]}")
    return proc


class Service(LabService):
    name = "postgres"

    # -- the plan ------------------------------------------------------------------------------

    def clusters(self, inv: Inventory) -> list[Cluster]:
        """Every lab cluster: systems whose databases have a data dir here and a connection to
        a machine the lab plays."""
        machines = {h.address: h for h in managed_hosts(inv)}
        out = []
        for sy in inv.systems:
            for role, db in (("primary", sy.primary_db), ("mirror", sy.mirror_db)):
                if db is not None and db.connection is not None and db.data_dir and \
                        db.connection.address in machines and self.state_dir in Path(db.data_dir).parents:
                    out.append(Cluster(sy.id, role, db, machines[db.connection.address]))
        return out

    # -- up --------------------------------------------------------------------------------------

    def up(self, progress: Progress) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab databases need root (network namespaces, the postgres user)")
        bin_dir = pg_bin()
        try:
            pg = pwd.getpwnam("postgres")
        except KeyError as err:
            raise LabError("no 'postgres' user: install the Debian package 'postgresql'") from err
        inv = self._inventory()
        clusters = self.clusters(inv)
        if not clusters:
            raise LabError(f"the lab inventory names no database with a connection to a lab host "
                           f"and a data dir under {self.state_dir}")
        missing = [c.machine.namespace for c in clusters
                   if not Path(f"/run/netns/{c.machine.namespace}").exists()]
        if missing:
            raise LabError(f"namespace {', '.join(sorted(set(map(str, missing))))} is missing: start the "
                           "network first (skydd lab up --only network,postgres)")
        self._stop_all(lambda m: None)  # what a crashed earlier run left
        revoke_traverse(self._read_state().get("granted", []))
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self.state_dir.mkdir(parents=True, mode=0o755)
        os.chmod(self.state_dir, 0o755)
        try:
            granted = grant_traverse(self.state_dir, pg.pw_uid)
            self._write_state({"granted": granted, "clusters": []})
            self._secrets(clusters)
            for c in clusters:
                self._init(c, bin_dir, pg)
                self._start(c, bin_dir)
                progress(f"{c.system} {c.role}: PostgreSQL on {c.machine.name} "
                         f"({c.machine.namespace}) at {c.db.host}:{c.db.port} and "
                         f"{c.db.address}:{c.db.port}, TLS")
            for c in clusters:
                self._seed(c, bin_dir)
            self._write_state({"granted": granted, "clusters": [
                {"system": c.system, "role": c.role, "data_dir": str(c.data)} for c in clusters]})
        except BaseException:
            self._stop_all(lambda m: None)
            raise
        progress("databases up; no replication (as found)")

    def _secrets(self, clusters: list[Cluster]) -> None:
        """The lab's passwords (replication, monitoring) and TLS: one CA per ``ca_file``, and each
        cluster's server certificate for its data and management addresses."""
        cas: dict[str, tuple[Any, Any]] = {}
        for c in clusters:
            db = c.db
            for ref in (db.replication_password or "", db.password or ""):
                path = Path(ref[5:])
                if ref.startswith("file:") and self.state_dir in path.parents and not path.exists():
                    _write_private(path, secrets.token_urlsafe(24) + "\n")
            if db.tls_cert and db.tls_key and db.ca_file:
                if db.ca_file not in cas:
                    cas[db.ca_file] = _lab_ca(Path(db.ca_file))
                _lab_cert(*cas[db.ca_file], Path(db.tls_cert), Path(db.tls_key),
                          [db.host, *([db.address] if db.address else [])])

    def _init(self, c: Cluster, bin_dir: Path, pg: pwd.struct_passwd) -> None:
        home = c.data.parent
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chown(home, pg.pw_uid, pg.pw_gid)
        os.chmod(home, 0o700)
        _as_postgres(str(bin_dir / "initdb"), "-D", str(c.data), "-U", "postgres", "-E", "UTF8",
                     "--locale=C.UTF-8", "--auth-local=peer", "--auth-host=scram-sha-256", "--no-sync")
        # Skydd's collector comes from the management namespace's address on the machine's net.
        hba = PG_HBA + (f"hostssl all          all   {c.machine.gateway}/32 scram-sha-256\n"
                        if c.db.address else "")
        (c.data / "pg_hba.conf").write_text(hba)
        (c.data / "pg_ident.conf").write_text(PG_IDENT)
        tls = ""
        if c.db.tls_cert and c.db.tls_key:
            for src, name, mode in ((c.db.tls_cert, "server.crt", 0o644), (c.db.tls_key, "server.key", 0o600)):
                shutil.copyfile(src, c.data / name)
                os.chown(c.data / name, pg.pw_uid, pg.pw_gid)
                os.chmod(c.data / name, mode)
            tls = "ssl = on\nssl_min_protocol_version = 'TLSv1.2'\n"
        # Every address of the machine (its data and management addresses): a base backup
        # copies this file to the mirror, where the same line holds.
        with (c.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# The lab's instance settings (skydd lab up)\n"
                       f"listen_addresses = '*'\nport = {c.db.port}\n"
                       f"unix_socket_directories = '{MACHINE_PG_RUN}'\n"
                       f"{tls}fsync = off\nsynchronous_commit = local\n")

    def _start(self, c: Cluster, bin_dir: Path) -> None:
        _as_postgres(str(bin_dir / "pg_ctl"), "-D", str(c.data), "-l", str(c.log), "-w", "-t", "60",
                     "start", machine=on_machine(self.home, c.machine))

    def _seed(self, c: Cluster, bin_dir: Path) -> None:
        psql = [str(bin_dir / "psql"), "-h", MACHINE_PG_RUN, "-p", str(c.db.port), "-U",
                "postgres", "-v", "ON_ERROR_STOP=1", "-qX"]
        machine = on_machine(self.home, c.machine)
        password = ""
        if c.db.password and c.db.password.startswith("file:"):
            password = f" PASSWORD '{Path(c.db.password[5:]).read_text().strip()}'"
        _as_postgres(*psql, "-d", "postgres", "-c",
                     f"CREATE ROLE {MONITOR_ROLE} LOGIN{password} IN ROLE pg_monitor", machine=machine)
        if c.role == "primary":
            _as_postgres(*psql, "-d", "postgres", "-c", f'CREATE DATABASE "{c.db.name}"', machine=machine)
            _as_postgres(*psql, "-d", c.db.name, "-c", SEED, machine=machine)

    # -- down ------------------------------------------------------------------------------------

    def down(self, progress: Progress) -> None:
        stopped = self._stop_all(progress)
        state = self._read_state()
        revoke_traverse(state.get("granted", []))
        shutil.rmtree(self.state_dir, ignore_errors=True)
        if stopped:
            progress(f"stopped {stopped} PostgreSQL cluster(s) and removed {self.state_dir}")

    def _stop_all(self, progress: Progress) -> int:
        """Stop every cluster under the state dir (by its postmaster.pid); returns how many."""
        stopped = 0
        for pidfile in sorted(self.state_dir.glob("*/data/postmaster.pid")):
            data = pidfile.parent
            try:
                pid = int(pidfile.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            if not _is_postmaster(pid, data):
                continue
            try:
                proc = _as_postgres(str(pg_bin() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w",
                                    "-t", "30", "stop", check=False)
                ok = proc.returncode == 0
            except (LabError, subprocess.TimeoutExpired):
                ok = False
            if not ok:
                try:
                    os.kill(pid, signal.SIGQUIT)  # immediate shutdown
                except ProcessLookupError:
                    pass
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and _is_postmaster(pid, data):
                    time.sleep(0.1)
            stopped += 1
            progress(f"stopped PostgreSQL in {data}")
        return stopped

    # -- status ----------------------------------------------------------------------------------

    def _write_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_dir / ".state.json.tmp"
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_dir / "state.json")

    def _read_state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads((self.state_dir / "state.json").read_text())
            return state
        except (OSError, ValueError):
            return {}

    def status(self) -> dict[str, Any]:
        try:
            clusters = self.clusters(self._inventory())
        except Exception as err:  # status never raises
            return {"state": "down", "endpoint": None, "error": str(err)}
        dbs: dict[str, Any] = {}
        for c in clusters:
            running = False
            try:
                pid = int((c.data / "postmaster.pid").read_text().split()[0])
                running = _is_postmaster(pid, c.data)
            except (OSError, ValueError, IndexError):
                pass
            dbs[f"{c.system}-{c.role}"] = {
                "state": "up" if running else "down", "host": c.db.host, "port": c.db.port,
                "address": c.db.address, "socket_dir": str(machine_socket_dir(self.home, c.machine)),
                "namespace": c.machine.namespace, "database": c.db.name}
        up = bool(dbs) and all(d["state"] == "up" for d in dbs.values()) and \
            (self.state_dir / "state.json").exists()
        primary = next((d for k, d in dbs.items() if k.endswith("-primary")), None)
        return {"state": "up" if up else "down",
                "endpoint": f"postgresql://{primary['host']}:{primary['port']}/{primary['database']}"
                if primary else None,
                "databases": dbs}


def cluster_of(home: Path, inv: Inventory, db: Database) -> Cluster:
    """The lab cluster behind one of the inventory's databases (for the lab tests: its
    ``socket_dir`` and ``on_machine``)."""
    svc = Service(home)
    found = next((c for c in svc.clusters(inv) if c.db == db), None)
    if found is None:
        raise LabError(f"the database at {db.host} is no lab cluster")
    return found


def socket_dir(home: Path, inv: Inventory, db: Database) -> Path:
    """The folder holding the cluster's local socket, seen from the root namespace."""
    return machine_socket_dir(home, cluster_of(home, inv, db).machine)


def machine_of(home: Path, inv: Inventory, db: Database) -> list[str]:
    """The command prefix that runs a program on the cluster's machine."""
    return on_machine(home, cluster_of(home, inv, db).machine)


def _is_postmaster(pid: int, data: Path) -> bool:
    """Whether ``pid`` is a live postgres serving ``data`` (never signal a reused PID)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    args = [a.decode(errors="replace") for a in cmdline]
    return bool(args) and Path(args[0]).name in ("postgres", "postmaster") and str(data) in args


def grant_traverse(path: Path, uid: int) -> list[dict[str, Any]]:
    """Let ``uid`` traverse every ancestor of ``path`` that it could not (a private
    ``$SKYDD_HOME`` under a 0700 folder): a search-only POSIX ACL entry for that user, nothing
    for anyone else. Returns what was changed, for ``revoke_traverse``."""
    granted = []
    for d in reversed([path, *path.parents]):
        st = d.stat()
        if st.st_uid == uid or st.st_mode & 0o001:
            continue
        try:
            os.getxattr(d, "system.posix_acl_access")
            has_acl = True
        except OSError:
            has_acl = False
        if has_acl:
            _unmask(d, uid)  # ours, masked by a later chmod (pytest does that to its root)
            continue  # an ACL someone else set: do not rewrite it
        mode = st.st_mode & 0o777
        try:
            os.setxattr(d, "system.posix_acl_access", _acl(mode, uid))
        except OSError as err:
            raise LabError(f"the postgres user cannot reach {path}: {d} is private and its file "
                           f"system refuses ACLs ({err.strerror}); choose a SKYDD_HOME that "
                           "others may traverse") from err
        granted.append({"path": str(d), "mode": mode})
    return granted


def _unmask(d: Path, uid: int) -> None:
    """Re-open the mask of an ACL that holds our ``uid:--x`` entry."""
    import struct
    raw = os.getxattr(d, "system.posix_acl_access")
    entries = [struct.unpack_from("<HHI", raw, 4 + 8 * i) for i in range((len(raw) - 4) // 8)]
    if (0x02, 1, uid) not in entries:
        return
    fixed = [(t, p | 1 if t == 0x10 else p, i) for t, p, i in entries]
    if fixed != entries:
        os.setxattr(d, "system.posix_acl_access",
                    raw[:4] + b"".join(struct.pack("<HHI", *e) for e in fixed))


def revoke_traverse(granted: list[dict[str, Any]]) -> None:
    for g in reversed(granted):
        try:
            os.removexattr(g["path"], "system.posix_acl_access")
            os.chmod(g["path"], g["mode"])
        except OSError:
            pass


def _acl(mode: int, uid: int) -> bytes:
    """A POSIX access ACL (the kernel's xattr format) equal to ``mode`` plus ``uid:--x``."""
    import struct
    entries = [(0x01, (mode >> 6) & 7, 0xFFFFFFFF), (0x02, 1, uid),
               (0x04, (mode >> 3) & 7, 0xFFFFFFFF), (0x10, ((mode >> 3) & 7) | 1, 0xFFFFFFFF),
               (0x20, mode & 7, 0xFFFFFFFF)]
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", t, p, i) for t, p, i in entries)


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


def _lab_ca(ca_path: Path) -> tuple[Any, Any]:
    """A lab database CA (written to ``ca_path``); returns its certificate and key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Skydd lab database CA")])
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
          .public_key(key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(key, hashes.SHA256()))
    ca_path.parent.mkdir(parents=True, exist_ok=True)
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return ca, key


def _lab_cert(ca: Any, ca_key: Any, cert_path: Path, key_path: Path, addresses: list[str]) -> None:
    """A server certificate signed by the lab CA whose SAN holds every address the cluster is
    reached at (libpq's verify-full checks the one it connected to)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, addresses[0])]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    _write_private(key_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode())
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
