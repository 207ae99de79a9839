"""Skydd installs like a tool (docs/adr/0010-packaging.md): the wheel built from the project carries
the catalog, the frameworks and profiles, the playbooks, the report templates and the lab's data,
and the installed ``skydd`` lists the catalog, applies a control and audits it with nothing but
what the wheel holds.

The wheel is built from a copy of the tree (what git tracks or would track), so the build leaves
no ``build/`` or ``*.egg-info`` in the checkout; it is installed with ``pip install --target`` into
a tmp folder and run from another tmp folder with ``PYTHONPATH`` naming only that folder: the
dependencies come from this virtualenv, Skydd's own packages from the wheel. Every run asserts the
modules came from the install, so the test cannot pass by reading the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections import Counter
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from estate.settings import cache_dir

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("estate", "policies", "identity", "audit", "playbooks", "skydd")
CONTROL = "d.key-files-private"


def tracked_files() -> list[str]:
    """What git tracks or would track (untracked files that are not ignored), as it is on disk."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to know which files belong to the project")
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, check=True).stdout.decode()
    return sorted(f for f in out.split("\0") if f and (ROOT / f).is_file())


def offline_build() -> bool:
    """Whether this virtualenv's setuptools and wheel meet ``[build-system] requires`` (the locked
    virtualenv of ``make deps`` does): then the build needs no network. Otherwise pip fetches them
    into an isolated build environment (from its cache, or PyPI)."""
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    for spec in map(Requirement, requires):
        try:
            if not spec.specifier.contains(version(spec.name), prereleases=True):
                return False
        except PackageNotFoundError:
            return False
    return True


@dataclass(frozen=True)
class Installed:
    wheel: Path
    debris: tuple[str, ...]  # build output that appeared in the checkout
    target: Path  # what `pip install --target` wrote: the packages and bin/skydd
    home: Path  # $HOME of the runs (the default cache lives below it)
    cwd: Path  # a folder outside the checkout

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "SKYDD_CACHE", "XDG_CACHE_HOME", "SKYDD_INVENTORY")}
        return {**env, "PYTHONPATH": str(self.target), "HOME": str(self.home),
                "SKYDD_HOME": str(self.home / "skydd-home"), "SKYDD_ACTOR": "wheel-test", **extra}

    def skydd(self, *args: str, timeout: int = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.target / "bin" / "skydd"), *args], cwd=self.cwd,
                              env=self.env(), capture_output=True, text=True, timeout=timeout)

    def python(self, code: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", code], cwd=self.cwd, env=self.env(**extra),
                              capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    src, dist, target, home, cwd = (base / n for n in ("src", "dist", "target", "home", "cwd"))
    for name in tracked_files():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    isolation = ["--no-build-isolation"] if offline_build() else []
    before = set(build_output())
    done = subprocess.run([*pip, "wheel", "--no-deps", *isolation, "-w", str(dist), str(src)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = dist.glob("skydd-*.whl")
    done = subprocess.run([*pip, "install", "--no-deps", "--no-compile", "--target", str(target),
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    home.mkdir()
    cwd.mkdir()
    debris = tuple(sorted(set(build_output()) - before))
    return Installed(wheel, debris, target, home, cwd)


def build_output() -> list[str]:
    return [p.name for p in ROOT.iterdir() if p.name in ("build", "dist") or p.name.endswith(".egg-info")]


def test_the_build_leaves_nothing_in_the_checkout(installed: Installed) -> None:
    assert installed.debris == ()


def test_the_wheel_holds_every_file_of_the_packages_and_their_data(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as z:
        names = set(z.namelist())
    wanted = [f for f in tracked_files() if f.split("/", 1)[0] in PACKAGES]
    missing = [f for f in wanted if f not in names]
    assert not missing, f"{len(missing)} files of the packages are not in the wheel: {missing[:20]}"
    for must in ("policies/catalog/d/d.key-files-private/control.yaml", "playbooks/ansible.cfg",
                 "playbooks/level_d.yml", "playbooks/roles/key_store/tasks/main.yml",
                 "playbooks/library/keycloak_hardening.py", "audit/reports/templates/report.html.j2",
                 "skydd/lab/inventory.yaml", "skydd/lab/vsphere_sim/go.mod"):
        assert must in names
    strays = [n for n in names if "__pycache__" in n or n.endswith(".pyc") or n.startswith("tests/")]
    assert not strays


def test_the_installed_tool_reads_its_code_and_data_from_the_install(installed: Installed) -> None:
    r = installed.python("import json, skydd, policies, policies.loader as l, estate.settings as s\n"
                         "print(json.dumps([skydd.__file__, policies.__file__, str(l.CATALOG_DIR),"
                         " str(s.PLAYBOOKS_DIR), str(s.CACHE_DIR)]))")
    assert r.returncode == 0, r.stderr
    paths = [Path(p) for p in json.loads(r.stdout)]
    for p in paths[:4]:
        assert p.is_relative_to(installed.target), f"{p} does not come from the installed wheel"
    # an installed tool caches under the user's cache folder, never inside site-packages
    assert paths[4] == installed.home / ".cache" / "skydd"
    xdg = installed.home / "xdg"
    r = installed.python("import estate.settings as s; print(s.CACHE_DIR)", XDG_CACHE_HOME=str(xdg))
    assert Path(r.stdout.strip()) == xdg / "skydd"
    r = installed.python("import estate.settings as s; print(s.CACHE_DIR)", SKYDD_CACHE="/var/cache/x")
    assert r.stdout.strip() == "/var/cache/x"


def test_a_checkout_caches_in_its_own_cache_folder(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("")
    assert cache_dir(tmp_path, {}) == tmp_path / ".cache"
    assert cache_dir(tmp_path, {"SKYDD_CACHE": "/c"}) == Path("/c")
    # a relative XDG_CACHE_HOME is invalid (XDG base directory spec) and ignored
    assert cache_dir(tmp_path / "site-packages", {"XDG_CACHE_HOME": "rel"}) == Path.home() / ".cache" / "skydd"


def test_the_installed_catalog_lists_every_control_of_the_five_levels(installed: Installed) -> None:
    r = installed.skydd("catalog", "list", "--format", "json")
    assert r.returncode == 0, r.stderr
    controls = json.loads(r.stdout)["controls"]
    ids = {c["id"] for c in controls}
    assert len(ids) == len(controls) >= 74
    assert set(Counter(c["level"] for c in controls)) == {"a", "b", "c", "d", "e"}
    d = next(c for c in controls if c["id"] == CONTROL)
    assert d["remediation"]["playbook"] == "level_d.yml"


def key_store_inventory(where: Path) -> tuple[Path, Path]:
    """An inventory with one key store holding a key readable by everyone (``d.key-files-private``
    fails on it): no lab service is needed to audit or apply it."""
    store = where / "pki"
    store.mkdir(mode=0o755)
    (store / "ca.key").write_text("secret")
    (store / "ca.key").chmod(0o644)
    inventory = where / "inventory.yaml"
    inventory.write_text(f"""
name: wheel-test
municipalities: [{{id: torsby, name: Torsby}}]
sites: [{{id: torsby, name: Torsby, municipality: torsby}}]
key_stores: [{{id: pki, site: torsby, path: "{store}"}}]
""")
    return inventory, store


def test_the_installed_tool_applies_with_its_own_playbooks_in_check_mode(installed: Installed,
                                                                        tmp_path: Path) -> None:
    inventory, store = key_store_inventory(tmp_path)
    r = installed.skydd("apply", "--check", "--control", CONTROL, "--inventory", str(inventory))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{CONTROL} | files are 0600" in r.stderr and "would change 2 task(s)" in r.stdout
    assert oct((store / "ca.key").stat().st_mode & 0o777) == "0o644", "check mode changed the key"
    # Ansible ran the playbook and role the wheel installed, not the checkout's
    (command,) = (installed.home / "skydd-home" / "runs").glob("*/artifacts/*/command")
    argv = json.loads(command.read_text())["command"]
    assert argv[-1] == str(installed.target / "playbooks" / "level_d.yml")
    events = "".join(p.read_text() for p in command.parent.glob("job_events/*.json"))
    assert str(installed.target / "playbooks" / "roles" / "key_store" / "tasks" / "main.yml") in events
    assert str(ROOT / "playbooks") not in events


def test_the_installed_tool_audits_and_renders_its_reports(installed: Installed, tmp_path: Path) -> None:
    inventory, _ = key_store_inventory(tmp_path)
    out = tmp_path / "report"
    r = installed.skydd("audit", "--control", CONTROL, "--inventory", str(inventory), "--out", str(out))
    assert r.returncode == 1, r.stdout + r.stderr  # the key is readable by everyone: a fail
    (finding,) = json.loads((out / "report.json").read_text())["findings"]
    assert (finding["control"], finding["status"]) == (CONTROL, "fail")
    assert CONTROL in (out / "report.html").read_text()  # the template came with the wheel
