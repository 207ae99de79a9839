"""Applying one control runs only what that control needs (read from ``--list-tasks``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from estate.settings import PLAYBOOKS_DIR

ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


def listed_tasks(playbook: str, tags: str) -> str:
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), "--list-tasks", "--tags", tags, "-i", "localhost,",
                           playbook], cwd=PLAYBOOKS_DIR, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_key_store_control_alone_does_not_need_keycloak() -> None:
    out = listed_tasks("level_d.yml", "d.key-files-private")
    assert "key_store : d.key-files-private" in out
    assert "keycloak_realm" not in out  # not even its "Keycloak answers" preflight


def test_a_realm_control_still_checks_that_keycloak_answers_first() -> None:
    out = listed_tasks("level_d.yml", "d.otp-policy")
    assert "keycloak_realm : d | preflight: Keycloak answers" in out
    assert out.index("preflight: Keycloak answers") < out.index("d.otp-policy |")
    assert "key_store :" not in out
