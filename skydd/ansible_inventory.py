"""The Skydd inventory as an Ansible inventory.

Every object Skydd can harden becomes one Ansible host, named by its id, in a group per object
type (``firewalls``, ``hypervisors``, ``systems``, ``identity_providers``, ``training_stores``,
``key_stores``) and in ``site_<id>`` and ``municipality_<id>`` groups; the machine of each
system's database with a ``connection`` is host ``<system>-primary-db`` / ``<system>-mirror-db``
in group ``databases`` (reached by delegation from the system's host); the controller itself is
host ``localhost`` in group ``controller`` (a group named like a host makes Ansible warn and
makes the pattern ambiguous). Each host carries its inventory fields as host variables
prefixed ``skydd_``; secrets stay references (``env:NAME`` / ``file:PATH``) that roles resolve
with ``lookup(...)`` under ``no_log``.

Objects with an ssh ``connection`` run with Ansible's ssh connection: address, port, user,
become and the private key from the inventory, strict host key checking against the
connection's known_hosts only (never adding a key), multiplexed (ControlMaster/ControlPersist)
and pipelined (``ansible.cfg``). A ``file:`` key is used where it lies; an ``env:`` key is
written to a 0600 file in the run folder by ``write`` and removed by ``remove_key_files``.
Everything else (and a ``local`` connection) runs with the local connection and the Python that
runs Skydd. A firewall without a connection is refused: its roles would otherwise harden the
controller's own firewall.

``build`` is pure (a dict); ``write`` puts the inventory (and env: keys) in a run folder.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from estate.errors import InputError
from estate.inventory import Inventory
from estate.secrets import resolve_secret

# Inventory list field -> (Ansible group, object type as in ``skydd_type``).
OBJECT_GROUPS: dict[str, tuple[str, str]] = {
    "firewalls": ("firewalls", "firewall"),
    "hypervisors": ("hypervisors", "hypervisor"),
    "systems": ("systems", "system"),
    "key_stores": ("key_stores", "key_store"),
}
LOCALHOST = "localhost"
CONTROLLER = "controller"
REMOTE_PYTHON = "/usr/bin/python3"  # Debian's; no discovery round trip, no PATH surprises


@dataclass(frozen=True)
class AnsibleInventory:
    """An Ansible YAML/JSON inventory (``data``) and the env: keys ``write`` puts in the run."""

    data: dict[str, Any]
    # key file path -> ``env:NAME`` reference, written by ``write``
    key_files: dict[str, str] = field(default_factory=dict)

    def hosts(self) -> dict[str, dict[str, Any]]:
        """Every host with its variables."""
        out: dict[str, dict[str, Any]] = {}

        def walk(group: dict[str, Any]) -> None:
            for name, hv in (group.get("hosts") or {}).items():
                out.setdefault(name, {}).update(hv or {})
            for child in (group.get("children") or {}).values():
                walk(child or {})

        walk(self.data["all"])
        return out

    def group(self, name: str) -> set[str]:
        """The hosts of one group, its children's included."""
        def find(group: dict[str, Any], wanted: str, inside: bool) -> set[str]:
            hosts: set[str] = set()
            if inside:
                hosts |= set(group.get("hosts") or {})
            for child_name, child in (group.get("children") or {}).items():
                hosts |= find(child or {}, wanted, inside or child_name == wanted)
            return hosts
        return find(self.data["all"], name, name == "all")


def site_group(site_id: str) -> str:
    return f"site_{_group_safe(site_id)}"


def municipality_group(municipality_id: str) -> str:
    return f"municipality_{_group_safe(municipality_id)}"


def _group_safe(ident: str) -> str:
    # Ansible group names are identifiers: inventory ids use '-', groups use '_'.
    return ident.replace("-", "_")


KEYS_DIR = "keys"


def ssh_args(known_hosts: str) -> str:
    """OpenSSH options for every ssh host: pinned keys only, key login only, one master
    connection per host kept for a minute."""
    return " ".join([
        "-o StrictHostKeyChecking=yes", f"-o UserKnownHostsFile={shlex.quote(known_hosts)}",
        "-o GlobalKnownHostsFile=/dev/null", "-o IdentitiesOnly=yes",
        "-o PasswordAuthentication=no", "-o ControlMaster=auto", "-o ControlPersist=60s"])


def ssh_hostvars(name: str, conn: Any, run_dir: Path, key_files: dict[str, str]) -> dict[str, Any]:
    """The Ansible connection variables of an object reached over SSH."""
    scheme, _, rest = conn.private_key.partition(":")
    if scheme == "file":
        key = rest
    else:  # env: the key exists only in the environment; write() puts it in the run folder
        key = str(run_dir / KEYS_DIR / f"{name}.key")
        key_files[key] = conn.private_key
    return {"ansible_connection": "ssh", "ansible_host": conn.address,
            "ansible_port": conn.port, "ansible_user": conn.user,
            "ansible_ssh_private_key_file": key, "ansible_become": conn.become,
            "ansible_timeout": max(1, int(conn.timeout)),
            "ansible_python_interpreter": REMOTE_PYTHON,
            "ansible_ssh_common_args": ssh_args(conn.known_hosts)}


def build(inventory: Inventory, *, run_dir: Path, python: str | None = None,
          home: Path | None = None) -> AnsibleInventory:
    """The Ansible inventory of ``inventory``; env: keys are named under ``run_dir/keys``."""
    python = python or sys.executable
    municipality_of_site = {s.id: s.municipality for s in inventory.sites}
    hosts: dict[str, dict[str, Any]] = {}
    owner: dict[str, str] = {}
    groups: dict[str, set[str]] = {g: set() for g, _ in OBJECT_GROUPS.values()}
    groups.update({"identity_providers": set(), "training_stores": set(), "databases": set()})
    site_members: dict[str, set[str]] = {s.id: set() for s in inventory.sites}
    muni_members: dict[str, set[str]] = {m.id: set() for m in inventory.municipalities}
    key_files: dict[str, str] = {}

    def connection_vars(name: str, conn: Any) -> dict[str, Any]:
        """SSH to ``conn``; without one, or a local one, this machine with this Python."""
        if conn is not None and conn.type == "ssh":
            return ssh_hostvars(name, conn, run_dir.resolve(), key_files)
        return {"ansible_connection": "local", "ansible_python_interpreter": python}

    def add(name: str, where: str, group: str, kind: str, obj: Any,
            sites: Iterable[str], municipality: str | None) -> None:
        if name == LOCALHOST or name in hosts:
            first = owner.get(name, "the controller")
            raise InputError(f"inventory: {where}: id {name!r} is also used by {first}; "
                             "Ansible host names must be unique")
        owner[name] = where
        hv: dict[str, Any] = {"skydd_type": kind}
        for key, value in obj.model_dump(mode="json").items():
            hv[f"skydd_{key}"] = value
        conn = getattr(obj, "connection", None)
        if conn is None and kind == "firewall":
            raise InputError(f"inventory: {where}: firewall {name!r} has no connection; give it "
                             "an ssh connection (or type local when it is this machine)")
        hv.update(connection_vars(name, conn))
        hosts[name] = hv
        groups[group].add(name)
        for s in sites:
            site_members.setdefault(s, set()).add(name)
        if municipality:
            muni_members.setdefault(municipality, set()).add(name)

    for fld, (group, kind) in OBJECT_GROUPS.items():
        for i, obj in enumerate(getattr(inventory, fld)):
            if fld == "systems":
                sites = [obj.primary_site, obj.mirror_site]
                muni = obj.municipality
            else:
                sites = [obj.site]
                muni = getattr(obj, "municipality", None) or municipality_of_site.get(obj.site)
            add(obj.id, f"{fld}[{i}]", group, kind, obj, dict.fromkeys(sites), muni)
    # The machines that run a system's databases: hosts of their own (group ``databases``,
    # in no site group), reached only by the ``pg_mirror`` role's delegated tasks; the system
    # names them in ``skydd_primary_db_server`` / ``skydd_mirror_db_server``.
    for i, sy in enumerate(inventory.systems):
        for role in ("primary", "mirror"):
            db = getattr(sy, f"{role}_db")
            if db is None or db.connection is None:
                continue
            name = f"{sy.id}-{role}-db"
            where = f"systems[{i}].{role}_db"
            if name == LOCALHOST or name in hosts:
                raise InputError(f"inventory: {where}: its server's host name {name!r} is also "
                                 f"used by {owner.get(name, 'the controller')}; rename one")
            owner[name] = where
            hosts[name] = {"skydd_type": "database_server", "skydd_system": sy.id,
                           "skydd_role": role, **connection_vars(name, db.connection)}
            groups["databases"].add(name)
            hosts[sy.id][f"skydd_{role}_db_server"] = name
    if inventory.identity_provider is not None:
        idp = inventory.identity_provider
        add(idp.id, "identity_provider", "identity_providers", "identity_provider", idp, (), None)
    # The training store has no id; it is one host by its role.
    add("training-store", "training_store", "training_stores", "training_store",
        inventory.training_store, (), None)

    top_vars: dict[str, Any] = {
        "skydd_inventory_name": inventory.name,
        "skydd_municipalities": [m.model_dump(mode="json") for m in inventory.municipalities],
        "skydd_sites": [s.model_dump(mode="json") for s in inventory.sites],
        "skydd_flows": [f.model_dump(mode="json") for f in inventory.flows],
    }
    if home is not None:
        top_vars["skydd_home"] = str(home)
    children: dict[str, Any] = {
        CONTROLLER: {"hosts": {LOCALHOST: {"ansible_connection": "local",
                                          "ansible_python_interpreter": python}}},
    }
    for g, members in groups.items():
        children[g] = {"hosts": {h: hosts[h] for h in sorted(members)}}
    for s, members in sorted(site_members.items()):
        children[site_group(s)] = {"hosts": {h: {} for h in sorted(members)}}
    for m, members in sorted(muni_members.items()):
        children[municipality_group(m)] = {"hosts": {h: {} for h in sorted(members)}}
    return AnsibleInventory({"all": {"vars": top_vars, "children": children}}, key_files)


def limit_for(site: str | None) -> str | None:
    """The ``--limit`` pattern for ``--site`` (None: every host)."""
    return site_group(site) if site else None


def write(ansible_inventory: AnsibleInventory, run_dir: Path) -> Path:
    """Write ``inventory/hosts.json`` and the env: keys; returns the inventory path."""
    inv_dir = run_dir / "inventory"
    inv_dir.mkdir(mode=0o700, exist_ok=True)
    if ansible_inventory.key_files:
        (run_dir / KEYS_DIR).mkdir(mode=0o700, exist_ok=True)
    for key, ref in sorted(ansible_inventory.key_files.items()):
        # OpenSSH refuses a key file without its final newline (resolve_secret strips it).
        _write_private(Path(key), resolve_secret(ref).rstrip("\n") + "\n", 0o600)
    path = inv_dir / "hosts.json"
    _write_private(path, json.dumps(ansible_inventory.data, indent=2, sort_keys=True) + "\n", 0o600)
    return path.resolve()


def remove_key_files(run_dir: Path) -> None:
    """Delete the private keys ``write`` put in the run folder (call when the run is over)."""
    folder = run_dir / KEYS_DIR
    if folder.is_dir():
        for key in folder.iterdir():
            key.unlink(missing_ok=True)
        folder.rmdir()


def _write_private(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    tmp.replace(path)
