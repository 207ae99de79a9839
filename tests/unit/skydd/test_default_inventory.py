"""Without ``--inventory`` a command works on ``$SKYDD_INVENTORY``, else ``$SKYDD_HOME/inventory.yaml``
(which ``skydd lab up`` links to the lab's), else it refuses with one line: the product never
falls back to the lab's example estate by itself (issue 11 item 6)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from estate.errors import InputError
from estate.settings import Settings
from skydd.lab import LAB_INVENTORY

BIN = Path(sys.executable).parent


def skydd(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SKYDD_INVENTORY"}
    return subprocess.run([str(BIN / "skydd"), *args], capture_output=True, text=True,
                          env={**env, "SKYDD_HOME": str(home)}, timeout=120, check=False)


def export(home: Path) -> subprocess.CompletedProcess[str]:
    return skydd("inventory", "export", "--format", "ansible", "--out", str(home / "hosts.yml"), home=home)


def test_no_inventory_anywhere_is_exit_2_saying_where_to_put_one(tmp_path: Path) -> None:
    proc = export(tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1
    assert "no inventory" in proc.stderr and "--inventory" in proc.stderr
    assert "skydd lab up" in proc.stderr
    assert not (tmp_path / "hosts.yml").exists()


def test_lab_up_links_the_lab_inventory_and_down_removes_the_link(tmp_path: Path) -> None:
    up = skydd("lab", "up", "--only", "officers", home=tmp_path)
    assert up.returncode == 0, up.stderr
    link = tmp_path / "inventory.yaml"
    assert link.is_symlink() and link.resolve() == LAB_INVENTORY.resolve()
    proc = export(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "firewalls" in (tmp_path / "hosts.yml").read_text(encoding="utf-8")
    down = skydd("lab", "down", home=tmp_path)
    assert down.returncode == 0, down.stderr
    assert not link.exists() and not link.is_symlink()
    assert export(tmp_path).returncode == 2


def test_an_inventory_of_ones_own_in_the_home_is_kept_by_the_lab(tmp_path: Path) -> None:
    own = tmp_path / "inventory.yaml"
    own.write_text("name: not-yaml-of-an-inventory: [\n", encoding="utf-8")
    up = skydd("lab", "up", "--only", "officers", home=tmp_path)
    assert "is kept" in up.stderr
    assert not own.is_symlink() and own.read_text(encoding="utf-8").startswith("name: not-yaml")
    skydd("lab", "down", home=tmp_path)
    assert own.is_file() and not own.is_symlink()


def test_the_order_is_option_then_environment_then_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(home=tmp_path)
    monkeypatch.delenv("SKYDD_INVENTORY", raising=False)
    with pytest.raises(InputError, match="no inventory"):
        settings.inventory()
    (tmp_path / "inventory.yaml").symlink_to(LAB_INVENTORY)
    assert settings.inventory() == LAB_INVENTORY.resolve()  # relative paths from the lab's folder
    monkeypatch.setenv("SKYDD_INVENTORY", str(tmp_path / "env.yaml"))
    assert settings.inventory() == tmp_path / "env.yaml"
    assert settings.inventory(tmp_path / "given.yaml") == tmp_path / "given.yaml"
