"""The playbooks as the Ansible collection ``skydd.hardening`` (docs/scale.md).

``skydd apply`` runs ``playbooks/`` in place; AWX / Automation Controller and ansible-navigator
take a collection. ``stage`` lays the same files out as one: ``galaxy.yml``, ``meta/``, the
roles and ``files/`` as they are, the custom modules of ``library/`` under ``plugins/modules/``
and the playbooks under ``playbooks/``, with the version of the installed skydd package.
Inside a collection a ``module_defaults`` key must name the collection's module by its FQCN
(tasks find it by the short name), so staging writes ``skydd.hardening.<module>`` there.
``build`` runs ``ansible-galaxy collection build`` on that staging copy.

    python -m skydd.collection [OUT_DIR]    # writes OUT_DIR/skydd-hardening-<version>.tar.gz
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from estate.errors import SkyddError
from estate.settings import PLAYBOOKS_DIR

# What the collection holds, relative to playbooks/ -> where it goes in the collection.
_TREES = {"roles": "roles", "files": "files", "meta": "meta", "library": "plugins/modules"}
_FILES = ("galaxy.yml", "README.md", "CHANGELOG.md")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")
COLLECTION = "skydd.hardening"


class CollectionError(SkyddError):
    """The collection could not be built (ansible-galaxy missing or refusing it)."""


def skydd_version() -> str:
    try:
        return version("skydd")
    except PackageNotFoundError as err:  # running from a tree that was never installed
        raise CollectionError("the skydd package is not installed: run 'make deps'") from err


def playbook_names(source: Path = PLAYBOOKS_DIR) -> list[str]:
    """The playbooks the collection ships: ``site.yml`` and one per level."""
    return sorted(p.name for p in source.glob("*.yml") if p.name == "site.yml"
                  or re.fullmatch(r"level_[a-e]\.yml", p.name))


def stage(dest: Path, source: Path = PLAYBOOKS_DIR) -> Path:
    """Lay ``source`` out as a collection in ``dest`` (created; must not exist). Returns ``dest``."""
    dest.mkdir(parents=True)
    for name in _FILES:
        shutil.copy2(source / name, dest / name)
    text = (dest / "galaxy.yml").read_text(encoding="utf-8")
    text, n = re.subn(r"(?m)^version: .*$", f"version: {skydd_version()}", text)
    if n != 1:
        raise CollectionError(f"{source / 'galaxy.yml'}: no single 'version:' line to set")
    (dest / "galaxy.yml").write_text(text, encoding="utf-8")
    for src, dst in _TREES.items():
        shutil.copytree(source / src, dest / dst, ignore=_IGNORE)
    modules = sorted(p.stem for p in (source / "library").glob("*.py"))
    if modules:
        defaults = re.compile(r"(module_defaults:[ \t]*\n[ \t]+)(" + "|".join(modules) + r"):")
        for tasks in (dest / "roles").rglob("*.yml"):
            text = tasks.read_text(encoding="utf-8")
            fixed = defaults.sub(lambda m: f"{m[1]}{COLLECTION}.{m[2]}:", text)
            if fixed != text:
                tasks.write_text(fixed, encoding="utf-8")
    (dest / "playbooks").mkdir()
    for name in playbook_names(source):
        shutil.copy2(source / name, dest / "playbooks" / name)
    return dest


def build(out_dir: Path, source: Path = PLAYBOOKS_DIR, *, galaxy: str | None = None) -> Path:
    """Build the collection tarball into ``out_dir``; returns its path."""
    galaxy = galaxy or str(Path(sys.executable).parent / "ansible-galaxy")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="skydd-collection-") as tmp:
        staged = stage(Path(tmp) / "hardening", source)
        try:
            proc = subprocess.run([galaxy, "collection", "build", "--force", "--output-path",
                                   str(out_dir.resolve()), str(staged)],
                                  capture_output=True, text=True, timeout=300, check=False)
        except OSError as err:
            raise CollectionError(f"cannot run {galaxy}: {err.strerror}") from err
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise CollectionError(f"ansible-galaxy collection build failed: {last[0]}")
    tarball = out_dir / f"skydd-hardening-{skydd_version()}.tar.gz"
    if not tarball.is_file():
        raise CollectionError(f"ansible-galaxy did not write {tarball}")
    return tarball


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        print(build(Path(args[0] if args else "dist")))
    except SkyddError as err:
        print(f"skydd.collection: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
