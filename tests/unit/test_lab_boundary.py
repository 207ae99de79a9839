"""Only the lab knows it is a lab (issue 11, item 6).

Outside ``skydd/lab/`` (and outside ``tests/``) no code or playbook names network namespaces
(``netns``, ``ip netns``, ``namespace`` as a place a host lives in) or unix socket paths
(``.s.PGSQL``, ``socket_dir``, ``unix_socket``), and nothing imports ``skydd.lab``: the product
reaches its estate over SSH and TLS the way it would in a municipality, and the lab is one
estate among others that maps inventory ids to its namespaces itself.

One module may import the lab: ``skydd/commands/lab.py``, the ``skydd lab`` command group. It is
the shell's entry for starting and stopping the lab (the CLI registers it like every other
group) and nothing else in the product reaches the lab through it. Every other import of
``skydd.lab`` (the lab inventory as a default) is a finding.

``PENDING`` lists what is known and being removed in this session, each entry with its owner.
An entry whose file no longer offends fails this test too, so the list can only shrink: whoever
finishes the work deletes the entry.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOP = ("estate", "policies", "identity", "audit", "playbooks", "skydd")
SUFFIXES = (".py", ".yml", ".yaml", ".j2")
LAB = ROOT / "skydd" / "lab"

# A lab concept in text, case-insensitive; ``namespace`` whole-word (singular or plural) so that
# ``SimpleNamespace`` does not count.
TERMS = {
    "netns": re.compile(r"netns", re.IGNORECASE),
    "namespace": re.compile(r"\bnamespaces?\b", re.IGNORECASE),
    "unix socket": re.compile(r"\.s\.PGSQL|socket_dir|unix_socket", re.IGNORECASE),
}

# Permanent exceptions: (path, term, line text that may carry it) and why.
ALLOWED_TEXT = {
    # The Ansible Galaxy collection's namespace (issue 11 item 8), not a network namespace.
    ("playbooks/galaxy.yml", "namespace", "namespace: skydd"),
}
# The ``skydd lab`` command group: the shell's entry into the lab (see the module docstring).
ALLOWED_IMPORTS = {"skydd/commands/lab.py"}

# Known and being removed this session: path -> (terms, owner). Delete the entry when done.
PENDING: dict[str, tuple[frozenset[str], str]] = {}


def files() -> list[Path]:
    found = [p for name in TOP for p in (ROOT / name).rglob("*")
             if p.suffix in SUFFIXES and p.is_file() and LAB not in p.parents
             and "__pycache__" not in p.parts]
    assert len(found) > 150, "the boundary test found too few files to be reading the real tree"
    return sorted(found)


def lab_imports(path: Path) -> list[int]:
    """Lines of ``path`` that import ``skydd.lab`` (absolute or relative, also inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = path.relative_to(ROOT).with_suffix("").parts
    package = rel[:-1]  # the package a relative import starts from (also for __init__.py)
    lines: list[int] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            else:
                module = node.module or ""
            names = [module] + [f"{module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        if any(n == "skydd.lab" or n.startswith("skydd.lab.") for n in names):
            lines.append(node.lineno)
    return lines


def offences(path: Path) -> dict[str, list[str]]:
    """term -> ``line: text`` for every lab concept in ``path`` (``import``: skydd.lab imports)."""
    rel = path.relative_to(ROOT).as_posix()
    text = path.read_text(encoding="utf-8", errors="replace")
    found: dict[str, list[str]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        for term, pattern in TERMS.items():
            if pattern.search(line) and not any(
                    rel == p and term == t and allowed in line for p, t, allowed in ALLOWED_TEXT):
                found.setdefault(term, []).append(f"{number}: {line.strip()}")
    if path.suffix == ".py" and rel not in ALLOWED_IMPORTS:
        for number in lab_imports(path):
            found.setdefault("import", []).append(f"{number}: imports skydd.lab")
    return found


def test_only_the_lab_names_namespaces_sockets_or_imports_the_lab() -> None:
    problems = []
    for path in files():
        rel = path.relative_to(ROOT).as_posix()
        pending = PENDING.get(rel, (frozenset(), ""))[0]
        for term, where in offences(path).items():
            if term not in pending:
                problems.append(f"{rel}: {term}: " + "; ".join(where[:3]))
    assert not problems, "lab concepts outside skydd/lab/:\n" + "\n".join(problems)


def test_pending_entries_still_offend() -> None:
    """The allow-list only shrinks: an entry that no longer applies must be deleted."""
    stale = []
    for rel, (terms, owner) in PENDING.items():
        path = ROOT / rel
        found = offences(path) if path.exists() else {}
        for term in sorted(terms - found.keys()):
            stale.append(f"{rel}: {term} (owner {owner}): no longer there, delete it from PENDING")
    assert not stale, "\n".join(stale)


def test_the_scanner_catches_each_kind(tmp_path: Path, monkeypatch) -> None:
    """The patterns and the import reader find what they are for (and not look-alikes)."""
    fake = tmp_path / "skydd" / "thing.py"
    fake.parent.mkdir()
    fake.write_text(
        "import subprocess\n"
        "from .lab import LAB_INVENTORY\n"
        "import skydd.lab.network as n\n"
        "cmd = ['ip', 'netns', 'exec', 'x']\n"
        "host = db.socket_dir\n"
        "fw.namespace\n"
        "from skydd.labels import x\n", encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = offences(fake)
    assert [w.split(":")[0] for w in found["import"]] == ["2", "3"]
    assert found["netns"] == ["4: cmd = ['ip', 'netns', 'exec', 'x']"]
    assert found["unix socket"] == ["5: host = db.socket_dir"]
    assert found["namespace"] == ["6: fw.namespace"]
