"""Ansible over SSH with the generated inventory, against a real sshd in a namespace of the
tests' own (``skt-*``): modules run on the host with strict host key checking, and a host whose
pinned key is wrong is unreachable, never trusted. Needs root; no lab lock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from estate.inventory import Firewall, Inventory, Municipality, Site
from estate.settings import PLAYBOOKS_DIR
from skydd import ansible_inventory as ai
from tests.lab.ssh_hosts import Hosts, keypair


def ansible(lab: Hosts, tmp_path: Path, **conn: object) -> subprocess.CompletedProcess[str]:
    host = lab.hosts[0]
    inv = Inventory(name="t", municipalities=[Municipality(id="sunne", name="Sunne")],
                    sites=[Site(id="sunne", name="Sunne", municipality="sunne")],
                    firewalls=[Firewall(id="sunne-fw1", municipality="sunne", site="sunne",
                                        position=1, connection=lab.connection(host, **conn))])
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    path = ai.write(ai.build(inv, run_dir=run), run)
    env = {**os.environ, "ANSIBLE_CONFIG": str(PLAYBOOKS_DIR / "ansible.cfg"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCAL_TEMP": str(run / "tmp"),
           "ANSIBLE_SSH_CONTROL_PATH_DIR": str(run / "cp"), "HOME": str(tmp_path)}
    tool = str(Path(sys.executable).parent / "ansible")
    return subprocess.run([tool, "sunne-fw1", "-i", str(path), "-m", "command", "-a",
                           "cat /proc/self/net/dev"], capture_output=True, text=True, env=env,
                          timeout=120)


def test_a_module_runs_on_the_host_over_ssh(lab: Hosts, tmp_path: Path) -> None:
    lab.add("sunne-fw1")
    r = ansible(lab, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"skt{lab.tag}n0" in r.stdout  # the host's own interface: it ran in its namespace
    assert lab.hosts[0].accepted_logins() >= 1


def test_a_wrong_pinned_key_makes_the_host_unreachable(lab: Hosts, tmp_path: Path) -> None:
    host = lab.add("sunne-fw1")
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"{host.address} ssh-ed25519 {keypair(tmp_path / 'other').split()[1]}\n")
    r = ansible(lab, tmp_path, known_hosts=str(wrong))
    assert r.returncode != 0
    assert "UNREACHABLE" in r.stdout and "Host key verification failed" in r.stdout + r.stderr
    assert host.accepted_logins() == 0
    assert len(wrong.read_text().splitlines()) == 1
