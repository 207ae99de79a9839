"""The supply-chain guarantee (SECURITY.md): every Python package comes from a lock file pinned
with sha256 hashes, and `make deps` installs it with pip's hash checking, so a package that was
substituted on the index (or in a cache) after locking is refused."""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCKS = (ROOT / "requirements" / "lock.txt", ROOT / "requirements" / "runtime.txt")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")


def pins(lock: Path) -> dict[str, list[str]]:
    """name → hashes of every pinned requirement in a pip-compile/uv lock file."""
    found: dict[str, list[str]] = {}
    current = None
    for raw in lock.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _PIN.match(line)
        if m:
            current = re.sub(r"[-_.]+", "-", m.group(1)).lower()
            found[current] = []
        for digest in re.findall(r"--hash=sha256:([0-9a-f]{64})", line):
            assert current is not None, f"{lock.name}: a hash before any pin: {raw!r}"
            found[current].append(digest)
    return found


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["test"]
    return {re.sub(r"[-_.]+", "-", re.split(r"[<>=\[;! ]", d, maxsplit=1)[0]).lower() for d in wanted}


def test_every_pin_carries_hashes_and_the_lock_covers_pyproject() -> None:
    for lock in LOCKS:
        locked = pins(lock)
        assert len(locked) > 50, f"{lock.name} holds too few pins to be the real lock"
        unhashed = sorted(name for name, hashes in locked.items() if not hashes)
        assert not unhashed, f"{lock.name}: pins without a hash: {unhashed}"
    missing = declared() - set(pins(LOCKS[0]))
    assert not missing, f"pyproject.toml declares what requirements/lock.txt does not pin: {sorted(missing)}"


def test_make_deps_installs_with_hash_checking() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("$(BIN)/.stamp:", 1)[1].split("\n\n", 1)[0]
    assert "--require-hashes -r $(LOCK)" in recipe
    assert "--no-deps" in recipe and "--no-build-isolation" in recipe  # nothing resolved past the lock


def _wheel(folder: Path, payload: str) -> Path:
    """A minimal pure-Python wheel ``skyddprobe`` whose module holds ``payload``."""
    path = folder / "skyddprobe-1.0-py3-none-any.whl"
    files = {
        "skyddprobe/__init__.py": f"VALUE = {payload!r}\n",
        "skyddprobe-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: skyddprobe\nVersion: 1.0\n",
        "skyddprobe-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: skydd-test\n"
                                          "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    record.append("skyddprobe-1.0.dist-info/RECORD,,")
    files["skyddprobe-1.0.dist-info/RECORD"] = "\n".join(record) + "\n"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def _install(index: Path, lock: Path, target: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-cache-dir",
         "--require-hashes", "--no-index", "--find-links", str(index), "--target", str(target),
         "-r", str(lock)],
        capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "PIP_CONFIG_FILE": "/dev/null"})


def test_a_package_substituted_after_locking_is_refused(tmp_path: Path) -> None:
    index = tmp_path / "index"
    index.mkdir()
    genuine = _wheel(index, "genuine")
    lock = tmp_path / "lock.txt"
    lock.write_text(f"skyddprobe==1.0 --hash=sha256:{hashlib.sha256(genuine.read_bytes()).hexdigest()}\n")

    ok = _install(index, lock, tmp_path / "good")
    assert ok.returncode == 0, ok.stderr
    assert "genuine" in (tmp_path / "good" / "skyddprobe" / "__init__.py").read_text()

    _wheel(index, "substituted")  # same name and version, other bytes: what an attacker would serve
    refused = _install(index, lock, tmp_path / "bad")
    assert refused.returncode != 0
    assert "DO NOT MATCH THE HASHES" in refused.stderr
    assert not (tmp_path / "bad" / "skyddprobe").exists()


def test_the_developer_tools_are_locked_with_hashes_too() -> None:
    lint = pins(ROOT / "requirements" / "lint.txt")
    assert {"ansible-lint", "ansible-core"} <= set(lint)
    assert not [name for name, hashes in lint.items() if not hashes]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("$(ANSIBLE_LINT)/.stamp:", 1)[1].split("\n\n", 1)[0]
    assert "--require-hashes -r $(LINT_LOCK)" in recipe
