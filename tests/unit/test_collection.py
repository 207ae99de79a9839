"""The playbooks as the collection skydd.hardening: ``ansible-galaxy collection build`` works on the
staging copy, and the installed collection is self-contained: its playbooks resolve every role
and module (custom ones from plugins/modules) with no library path from the source tree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
import yaml

from estate.settings import INSTALL_ROOT, PLAYBOOKS_DIR
from skydd import collection

BIN = Path(sys.executable).parent
SITE_PACKAGES = Path(yaml.__file__).parent.parent  # the venv's: bundled collections live there


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return collection.build(tmp_path_factory.mktemp("dist"))


def test_galaxy_version_is_the_package_version() -> None:
    galaxy = yaml.safe_load((PLAYBOOKS_DIR / "galaxy.yml").read_text(encoding="utf-8"))
    assert (galaxy["namespace"], galaxy["name"]) == ("skydd", "hardening")
    pyproject = INSTALL_ROOT / "pyproject.toml"
    if pyproject.is_file():  # a source tree; an installed wheel has only the metadata
        assert galaxy["version"] == tomllib.loads(pyproject.read_text())["project"]["version"]
    assert galaxy["version"] == collection.skydd_version()


def test_build_lays_out_a_collection(tarball: Path) -> None:
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("MANIFEST.json"))  # type: ignore[arg-type]
    assert manifest["collection_info"]["license"] == ["EUPL-1.2"]
    modules = {p.stem for p in (PLAYBOOKS_DIR / "library").glob("*.py")}
    assert modules and {f"plugins/modules/{m}.py" for m in modules} <= names
    assert {f"playbooks/{p}" for p in collection.playbook_names()} <= names
    assert "playbooks/site.yml" in names and "playbooks/level_b.yml" in names
    assert "meta/runtime.yml" in names and "files/suricata/skydd-baseline.rules" in names
    roles = {p.name for p in (PLAYBOOKS_DIR / "roles").iterdir() if p.is_dir()}
    assert {f"roles/{r}/tasks/main.yml" for r in roles} <= names
    assert not any(n.startswith("library") or n.endswith(".pyc") or n == "ansible.cfg" for n in names)


def test_installed_collection_resolves_every_role_and_module(tarball: Path, tmp_path: Path) -> None:
    dest = tmp_path / "collections"
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "--offline", "--no-deps",
                    "-p", str(dest), str(tarball)], check=True, capture_output=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["ANSIBLE_COLLECTIONS_PATH"] = f"{dest}:{SITE_PACKAGES}"
    for playbook in ("skydd.hardening.site", "skydd.hardening.level_d", "skydd.hardening.level_e"):
        proc = subprocess.run([str(BIN / "ansible-playbook"), "--syntax-check", "-i", "localhost,",
                               playbook], capture_output=True, text=True, timeout=300, env=env,
                              cwd=tmp_path, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    # the source roles keep the short names skydd apply resolves from playbooks/library
    tasks = (PLAYBOOKS_DIR / "roles/keycloak_realm/tasks/main.yml").read_text(encoding="utf-8")
    assert "skydd.hardening." not in tasks


def test_a_collection_that_misses_a_module_is_refused_by_ansible(tarball: Path, tmp_path: Path) -> None:
    # the check above can fail: without plugins/modules the playbooks do not resolve
    dest = tmp_path / "collections"
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "--offline", "--no-deps",
                    "-p", str(dest), str(tarball)], check=True, capture_output=True, timeout=300)
    (dest / "ansible_collections/skydd/hardening/plugins/modules/keycloak_hardening.py").unlink()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["ANSIBLE_COLLECTIONS_PATH"] = f"{dest}:{SITE_PACKAGES}"
    proc = subprocess.run([str(BIN / "ansible-playbook"), "--syntax-check", "-i", "localhost,",
                           "skydd.hardening.level_d"], capture_output=True, text=True, timeout=300,
                          env=env, cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "keycloak_hardening" in proc.stdout + proc.stderr
