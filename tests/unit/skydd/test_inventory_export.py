"""``skydd inventory export --format ansible``: real Ansible reads the export, every firewall keeps
its ssh variables with pinned host keys, and bad input is exit 2 with one line."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from estate.errors import InputError
from estate.loader import load_inventory
from skydd.commands.inventory import PLAYBOOK_PYTHON, export_ansible
from skydd.lab import LAB_INVENTORY

BIN = Path(sys.executable).parent


def skydd(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SKYDD_HOME": str(home)}
    return subprocess.run([str(BIN / "skydd"), *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def ansible_list(path: Path) -> dict:
    proc = subprocess.run([str(BIN / "ansible-inventory"), "-i", str(path), "--list"],
                          capture_output=True, text=True, timeout=120, check=True,
                          env={**os.environ, "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true"})
    return json.loads(proc.stdout)


def test_export_round_trips_through_ansible_inventory(tmp_path: Path) -> None:
    out = tmp_path / "hosts.yml"
    proc = skydd("inventory", "export", "--format", "ansible", "--out", str(out), home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    listed = ansible_list(out)
    hostvars = listed["_meta"]["hostvars"]
    inv, _ = load_inventory(LAB_INVENTORY, home=tmp_path)
    firewalls = {fw.id for fw in inv.firewalls}
    assert firewalls and set(listed["firewalls"]["hosts"]) == firewalls
    for fw in inv.firewalls:
        hv = hostvars[fw.id]
        assert fw.connection is not None and fw.connection.type == "ssh"
        assert hv["ansible_connection"] == "ssh"
        assert hv["ansible_host"] == fw.connection.address
        assert hv["ansible_port"] == fw.connection.port
        assert hv["ansible_user"] == fw.connection.user
        assert hv["ansible_ssh_private_key_file"] == fw.connection.private_key.removeprefix("file:")
        args = hv["ansible_ssh_common_args"]
        assert "StrictHostKeyChecking=yes" in args
        assert f"UserKnownHostsFile={fw.connection.known_hosts}" in args
        # nothing that only exists during a skydd run
        assert "/runs/" not in json.dumps(hv)
    # the controller runs with the playbook's Python, wherever that is (an execution environment)
    assert hostvars["localhost"]["ansible_python_interpreter"] == PLAYBOOK_PYTHON
    assert hostvars["localhost"]["skydd_inventory_file"] == str(LAB_INVENTORY.resolve())
    assert sys.executable not in out.read_text(encoding="utf-8")


def test_overrides_for_the_execution_environment(tmp_path: Path) -> None:
    proc = skydd("inventory", "export", "--inventory-file", "/runner/project/inventory.yaml",
                 "--known-hosts", "/runner/project/known_hosts", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "hosts.yml"
    out.write_text(proc.stdout, encoding="utf-8")
    hostvars = ansible_list(out)["_meta"]["hostvars"]
    fw = hostvars["torsby-fw1"]
    assert "UserKnownHostsFile=/runner/project/known_hosts" in fw["ansible_ssh_common_args"]
    assert "StrictHostKeyChecking=yes" in fw["ansible_ssh_common_args"]
    assert fw["skydd_inventory_file"] == "/runner/project/inventory.yaml"


def test_env_key_is_left_out_with_a_warning(tmp_path: Path) -> None:
    doc = yaml.safe_load(LAB_INVENTORY.read_text(encoding="utf-8"))
    doc["firewalls"][0]["connection"]["private_key"] = "env:SKYDD_FW_KEY"
    src = tmp_path / "inv.yaml"
    src.write_text(yaml.safe_dump(doc), encoding="utf-8")
    inv, _ = load_inventory(src, home=tmp_path)
    data, warnings = export_ansible(inv, inventory_file=str(src))
    name = doc["firewalls"][0]["id"]
    hv = data["all"]["children"]["firewalls"]["hosts"][name]
    assert "ansible_ssh_private_key_file" not in hv
    assert hv["ansible_connection"] == "ssh"
    assert len(warnings) == 1 and warnings[0].startswith(f"{name}: ") and "Machine credential" in warnings[0]
    assert "SKYDD_FW_KEY" not in json.dumps(data["all"]["children"]["firewalls"]["hosts"][name]
                                            ["ansible_ssh_common_args"])


def test_blank_known_hosts_is_bad_input(tmp_path: Path) -> None:
    inv, _ = load_inventory(LAB_INVENTORY, home=tmp_path)
    with pytest.raises(InputError, match="known_hosts"):
        export_ansible(inv, inventory_file="x", known_hosts=" ")


@pytest.mark.parametrize("args", [
    ("--inventory", "MISSING"),
    ("--inventory", "BAD"),
    ("--format", "json"),
])
def test_bad_input_is_exit_2_with_one_line(tmp_path: Path, args: tuple[str, ...]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("firewalls: [1, 2\n", encoding="utf-8")
    argv = [str(tmp_path / "missing.yaml") if a == "MISSING" else str(bad) if a == "BAD" else a
            for a in args]
    proc = skydd("inventory", "export", *argv, home=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("skydd: ")
    assert "Traceback" not in proc.stderr
