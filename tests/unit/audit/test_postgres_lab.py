"""The lab's PostgreSQL service without starting a cluster: which clusters the lab inventory
names, the search-only ACL that lets the ``postgres`` user through a private ``$SKYDD_HOME``
(and re-opening it after a chmod masked it), PID checks that never match a stranger, and a
missing network namespace as one clear error."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from skydd.lab import LAB_INVENTORY
from skydd.lab.errors import LabError
from skydd.lab.postgres import Service, _acl, _is_postmaster, _unmask, revoke_traverse

UID = 4242  # any uid other than the owner's


def _acl_supported(path: Path) -> bool:
    try:
        os.setxattr(path, "system.posix_acl_access", _acl(0o700, UID))
        os.removexattr(path, "system.posix_acl_access")
        return True
    except OSError:
        return False


def test_the_lab_inventory_names_a_primary_in_dc_and_a_mirror_in_site4(tmp_path: Path) -> None:
    svc = Service(tmp_path)
    from estate.loader import load_inventory
    inv, _ = load_inventory(LAB_INVENTORY, home=tmp_path)
    found = {(c.system, c.role): c for c in svc.clusters(inv)}
    assert set(found) == {("socialcare", "primary"), ("socialcare", "mirror")}
    # each on the machine its connection reaches: the dc host and the site4 host
    assert found["socialcare", "primary"].machine.namespace == "skydd-dc"
    assert found["socialcare", "mirror"].machine.namespace == "skydd-s4"
    assert found["socialcare", "primary"].machine.address == found["socialcare", "primary"].db.address
    for c in found.values():  # the state lives under $SKYDD_HOME/lab/postgres
        assert svc.state_dir in c.data.parents


def test_a_traverse_entry_masked_by_chmod_is_reopened(tmp_path: Path) -> None:
    d = tmp_path / "private"
    d.mkdir(mode=0o700)
    if not _acl_supported(d):
        pytest.fail(f"{d}: the file system refuses POSIX ACLs, which the lab needs")
    os.setxattr(d, "system.posix_acl_access", _acl(0o700, UID))
    assert stat.S_IMODE(d.stat().st_mode) == 0o710  # the group bits show the mask
    os.chmod(d, 0o700)  # what pytest does to its root folder
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    _unmask(d, UID)
    assert stat.S_IMODE(d.stat().st_mode) == 0o710
    revoke_traverse([{"path": str(d), "mode": 0o700}])
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    with pytest.raises(OSError):
        os.getxattr(d, "system.posix_acl_access")


def test_an_acl_without_our_entry_is_left_alone(tmp_path: Path) -> None:
    d = tmp_path / "theirs"
    d.mkdir(mode=0o700)
    if not _acl_supported(d):
        pytest.fail(f"{d}: the file system refuses POSIX ACLs, which the lab needs")
    theirs = _acl(0o700, UID + 1)
    os.setxattr(d, "system.posix_acl_access", theirs)
    os.chmod(d, 0o700)
    _unmask(d, UID)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700


def test_a_pid_is_a_postmaster_only_when_it_runs_postgres_on_that_data_dir(tmp_path: Path) -> None:
    assert not _is_postmaster(os.getpid(), tmp_path)
    assert not _is_postmaster(2 ** 22 + 1, tmp_path)  # beyond pid_max: no such process


def test_up_without_the_network_namespaces_is_one_clear_error(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        with pytest.raises(LabError, match="need root"):
            Service(tmp_path).up(lambda m: None)
        return
    inventory = tmp_path / "inventory.yaml"
    # segments the lab knows by no other name: their namespaces are skydd-<site>-<segment>
    inventory.write_text(LAB_INVENTORY.read_text().replace("- name: dc\n", "- name: unit-none-dc\n")
                         .replace("- name: site4\n", "- name: unit-none-s4\n"))
    svc = Service(tmp_path)
    svc.inventory_path = inventory
    try:
        svc.up(lambda m: None)
    except LabError as err:
        msg = str(err)
    else:  # pragma: no cover - the namespaces cannot exist
        svc.down(lambda m: None)
        pytest.fail("up started clusters without their namespaces")
    assert "skydd-torsby-unit-none-dc" in msg or "postgresql" in msg.lower()
    assert "lab up --only network,postgres" in msg or "install" in msg
    assert not (svc.state_dir / "state.json").exists()
