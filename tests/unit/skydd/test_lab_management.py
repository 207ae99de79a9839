"""The lab's management plan and its sshd files, without namespaces: which address each machine
gets, what skydd-mgmt forwards, what each sshd accepts, how the keys are written."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from estate.loader import load_inventory
from skydd.lab import LAB_INVENTORY, management, ssh
from skydd.lab.errors import LabError
from skydd.lab.management import ManagedHost
from tests.conftest import require_root, unavailable


@pytest.fixture
def hosts(tmp_path: Path) -> list[ManagedHost]:
    inv, _ = load_inventory(LAB_INVENTORY, home=tmp_path)
    return management.managed_hosts(inv)


def test_every_machine_gets_an_address_in_its_management_network(
        hosts: list[ManagedHost], tmp_path: Path) -> None:
    inv, _ = load_inventory(LAB_INVENTORY, home=tmp_path)
    by_ns = {h.namespace: h for h in hosts}
    fws = {management.namespace_of(fw.id): fw for fw in inv.firewalls}
    assert set(by_ns) == set(fws) | {"skydd-dc", "skydd-s4", "skydd-tor-lan", "skydd-sun-lan",
                                     "skydd-hag-lan"}
    for ns, fw in fws.items():
        assert by_ns[ns].network == fw.management_network
        assert ipaddress.ip_address(by_ns[ns].address) in ipaddress.ip_network(fw.management_network)
    assert by_ns["skydd-tor-fw1"].address == "10.1.9.11"
    assert by_ns["skydd-hag-fw2"].address == "10.3.9.12"
    assert {ns: by_ns[ns].address for ns in ("skydd-dc", "skydd-s4", "skydd-tor-lan",
                                             "skydd-sun-lan", "skydd-hag-lan")} == {
        "skydd-dc": "10.0.9.10", "skydd-s4": "10.0.9.40", "skydd-tor-lan": "10.0.9.101",
        "skydd-sun-lan": "10.0.9.102", "skydd-hag-lan": "10.0.9.103"}
    # skydd-mgmt's own address on each network is .1, and no management network is a data net.
    assert {h.gateway for h in hosts} == {"10.1.9.1", "10.2.9.1", "10.3.9.1", "10.0.9.1"}
    data = [ipaddress.ip_network(seg.network) for site in inv.sites for seg in site.segments]
    assert not [n for n in management.networks(hosts)
                if any(ipaddress.ip_network(n).overlaps(d) for d in data)]
    assert len({h.link for h in hosts}) == len(hosts)
    assert all(len(h.link) <= 15 for h in hosts)


@pytest.mark.parametrize(("address", "message"), [
    ("10.1.9.1", "management namespace's own address"),
    ("10.1.8.5", "not a host address"),
    ("10.1.9.255", "not a host address"),
    ("10.1.9.12", "also torsby-fw2's"),
])
def test_a_plan_that_cannot_work_names_the_host(address: str, message: str) -> None:
    good = ManagedHost("torsby-fw2", "firewall", "skydd-tor-fw2", "10.1.9.12", "10.1.9.0/24")
    bad = ManagedHost("torsby-fw1", "firewall", "skydd-tor-fw1", address, "10.1.9.0/24")
    with pytest.raises(LabError, match=f"torsby-fw1: .*{message}"):
        management._check([good, bad])


def test_skydd_mgmt_forwards_only_new_connections_from_the_controller(
        hosts: list[ManagedHost]) -> None:
    rules = management.ruleset(hosts)
    forward = rules.split("chain forward {")[1].split("}\n\tchain")[0]
    assert "policy drop;" in forward
    accepts = [line.strip() for line in forward.splitlines() if "accept" in line]
    assert accepts[0] == "ct state established,related accept"
    assert len(accepts) == 2 and accepts[1].startswith(f'iifname "{management.UPLINK_INNER}" oifname {{')
    assert all(f'"{h.link}"' in accepts[1] for h in hosts)
    nat = rules.split("chain postrouting {")[1]
    assert f'iifname "{management.UPLINK_INNER}"' in nat and "masquerade" in nat
    inbound = rules.split("chain input {")[1].split("}")[0]
    assert "policy drop;" in inbound and not any(f'"{h.link}"' in inbound for h in hosts)


def test_sshd_config_listens_on_the_management_address_and_takes_keys_only(
        hosts: list[ManagedHost], tmp_path: Path) -> None:
    fw = next(h for h in hosts if h.name == "sunne-fw2")
    text = ssh.sshd_config(fw, tmp_path)
    options = dict(line.split(" ", 1) for line in text.splitlines() if line and line[0] != "#")
    assert [line for line in text.splitlines() if line.startswith("ListenAddress")] == [
        "ListenAddress 10.2.9.12:22"]
    assert options["PermitRootLogin"] == "prohibit-password"
    assert options["PasswordAuthentication"] == "no"
    assert options["KbdInteractiveAuthentication"] == "no"
    assert options["UsePAM"] == "no"
    assert options["AuthorizedKeysFile"] == str(tmp_path / "authorized_keys")
    assert options["PidFile"] == str(tmp_path / "sshd.pid")
    assert options["HostKey"] == str(tmp_path / ssh.HOST_KEY)


def test_sshd_accepts_the_config_it_is_given(hosts: list[ManagedHost], tmp_path: Path) -> None:
    require_root()
    if not Path(ssh.SSHD).exists():
        message = "sshd -t needs openssh-server (listed in .ci/debian-packages; run make deps)"
        unavailable(message)
    fw = next(h for h in hosts if h.name == "torsby-fw1")
    ssh.PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    ssh.new_keypair(tmp_path / ssh.HOST_KEY, "test")
    (tmp_path / "sshd_config").write_text(ssh.sshd_config(fw, tmp_path))
    r = subprocess.run([ssh.SSHD, "-t", "-f", str(tmp_path / "sshd_config")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_the_client_key_is_private_and_made_once(tmp_path: Path) -> None:
    line = ssh.ensure_client_key(tmp_path)
    key = ssh.client_key(tmp_path)
    assert key.stat().st_mode & 0o777 == 0o600
    assert ssh.ssh_dir(tmp_path).stat().st_mode & 0o777 == 0o700
    assert line.startswith("ssh-ed25519 AAAA")
    first = key.read_bytes()
    assert ssh.ensure_client_key(tmp_path) == line
    assert key.read_bytes() == first
    if shutil.which("ssh-keygen"):  # OpenSSH reads the private key and derives the same public key
        derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True,
                                 text=True, check=True).stdout.split()[:2]
        assert derived == line.split()[:2]


def test_stop_without_a_running_sshd_only_removes_files(tmp_path: Path) -> None:
    folder = ssh.ssh_dir(tmp_path) / "skydd-x"
    folder.mkdir(parents=True)
    (folder / "sshd.pid").write_text(str(os.getpid()))  # a live pid that is not that sshd
    ssh.known_hosts(tmp_path).write_text("10.0.9.10 ssh-ed25519 AAAA\n")
    assert ssh.stop(tmp_path) == 0
    assert not folder.exists() and not ssh.known_hosts(tmp_path).exists()


def test_the_lab_inventory_points_every_machine_at_the_lab_s_keys(tmp_path: Path) -> None:
    inv, _ = load_inventory(LAB_INVENTORY, home=tmp_path)
    machines = {fw.id: fw for fw in inv.firewalls} | {
        f"{site.id}/{seg.name}": seg for site in inv.sites for seg in site.segments}
    assert len(machines) == 11
    for m in machines.values():
        c = m.connection
        assert c is not None and c.type == "ssh", m
        assert c.private_key == f"file:{ssh.client_key(tmp_path)}"
        assert c.known_hosts == str(ssh.known_hosts(tmp_path))
        assert (c.port, c.user) == (22, "root")
    # The lab builds exactly the addresses the inventory names.
    plan = {h.name: h.address for h in management.managed_hosts(inv)}
    assert plan == {name: m.connection.address for name, m in machines.items()}  # type: ignore[union-attr]
    # and plays each in the namespace only the lab knows (the inventory names none)
    assert {h.name: h.namespace for h in management.managed_hosts(inv)}["torsby/dc"] == "skydd-dc"
    assert management.namespace_of("other-site/lan") == "skydd-other-site-lan"


def test_the_inventory_s_connection_address_decides(tmp_path: Path) -> None:
    inv, _ = load_inventory(LAB_INVENTORY, home=tmp_path)
    fw = inv.firewalls[0]
    assert fw.connection is not None
    moved = inv.model_copy(update={"firewalls": [
        fw.model_copy(update={"connection": fw.connection.model_copy(
            update={"address": "10.1.9.77"})}), *inv.firewalls[1:]]})
    assert {h.name: h.address for h in management.managed_hosts(moved)}[fw.id] == "10.1.9.77"
    outside = inv.model_copy(update={"firewalls": [
        fw.model_copy(update={"connection": fw.connection.model_copy(
            update={"address": "10.0.9.77"})}), *inv.firewalls[1:]]})
    with pytest.raises(LabError, match=f"{fw.id}: management address 10.0.9.77 is not a host"):
        management.managed_hosts(outside)
