"""The layers of the code (docs/architecture.md): dependencies run one way.

    estate ← policies ← identity ← audit ← playbooks' modules ← skydd (the shell: CLI, web, lab)

A module may import its own package and any package below it, never one above: nothing below
the shell imports the shell (and so nothing below it imports the lab). This test reads every
module's imports with ``ast`` (also those inside functions and ``TYPE_CHECKING`` blocks).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("estate", "policies", "identity", "audit", "playbooks", "skydd")
RANK = {name: i for i, name in enumerate(LAYERS)}


def modules() -> list[Path]:
    found = [p for name in LAYERS for p in (ROOT / name).rglob("*.py")]
    assert len(found) > 80, "the layer test found too few modules to be reading the real tree"
    return sorted(found)


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, top-level project package) for every absolute or relative import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = path.relative_to(ROOT).parts[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            top = package if node.level else (node.module or "").split(".")[0]
            found.append((node.lineno, top))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name.split(".")[0]) for alias in node.names)
    return [(line, top) for line, top in found if top in RANK]


def violations(path: Path) -> list[str]:
    own = path.relative_to(ROOT).parts[0]
    return [f"{path.relative_to(ROOT)}:{line}: {own} imports {top}, a layer above it"
            for line, top in imported(path) if RANK[top] > RANK[own]]


def test_every_dependency_points_down() -> None:
    found = [v for path in modules() for v in violations(path)]
    assert not found, "\n".join(found)


def test_the_check_sees_an_arrow_against_the_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = ROOT / "policies" / "_layer_probe.py"
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: (
        "from skydd.lab import LAB_INVENTORY\nimport audit.log\nfrom estate import errors\n"))
    assert violations(bad) == [
        "policies/_layer_probe.py:1: policies imports skydd, a layer above it",
        "policies/_layer_probe.py:2: policies imports audit, a layer above it",
    ]
