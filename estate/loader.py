"""Load an inventory from YAML strictly: a bad inventory is one ``InputError`` naming file, line
and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from .canonical import digest_of
from .errors import InputError
from .inventory import Inventory, InventoryReferenceError


def _line_of(doc: Any, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the deepest node along ``loc`` that the YAML round-trip loader kept."""
    node, line = doc, None
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            ln = node.lc.key(part)
            line = ln[0] + 1 if ln else line
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            ln = node.lc.item(part)
            line = ln[0] + 1 if ln else line
            node = node[part]
        else:
            break
    return line


def load_inventory(path: Path, *, home: Path) -> tuple[Inventory, str]:
    """Load and validate an inventory; returns it with the digest of its content.

    ``${SKYDD_HOME}`` in any text value becomes ``home``, so every consumer sees absolute paths.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(f"{path}: cannot read inventory: {err.strerror}") from err
    try:
        doc = YAML(typ="rt").load(text)
    except YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise InputError(f"{path}{line}: not valid YAML: {getattr(err, 'problem', err)}") from err
    if not isinstance(doc, CommentedMap):
        raise InputError(f"{path}:1: an inventory must be a mapping")
    try:
        inv = Inventory.model_validate(_expand(_plain(doc), str(home)))
    except ValidationError as err:
        first = err.errors()[0]
        loc = tuple(first["loc"])
        ctx = first.get("ctx", {}).get("error")
        if isinstance(ctx, InventoryReferenceError):
            loc, msg = ctx.loc, str(ctx)
        else:
            msg = first["msg"].removeprefix("Value error, ")
            if first["type"] == "extra_forbidden":
                msg = "unknown field"
            elif first["type"] == "missing":
                msg = "missing field"
        line = _line_of(doc, loc)
        field = ".".join(str(p) for p in loc) or "(top)"
        raise InputError(f"{path}:{line or 1}: {field}: {msg}") from err
    return inv, digest_of(_plain(doc))


def _expand(node: Any, home: str) -> Any:
    if isinstance(node, dict):
        return {k: _expand(v, home) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, home) for v in node]
    return node.replace("${SKYDD_HOME}", home) if isinstance(node, str) else node


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node
