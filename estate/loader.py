"""Load an inventory from YAML strictly: a bad inventory is one ``InputError`` naming file, line
and field. The YAML is read by ``estate.documents`` (size, depth, aliases and tags screened);
ids must be unique within each list of the inventory, and a duplicate names both places."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from .canonical import digest_of
from .documents import read_yaml
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
    doc = read_yaml(path, round_trip=True, what="inventory")
    if not isinstance(doc, CommentedMap):
        raise InputError(f"{path}:1: an inventory must be a mapping")
    _refuse_duplicate_ids(doc, path)
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


# Lists whose entries are named by a key that must be unique: (path to the list, the key).
# ``*`` stands for every entry of a list (segments are unique within their site).
_UNIQUE: tuple[tuple[tuple[str, ...], str], ...] = (
    (("municipalities",), "id"), (("sites",), "id"), (("firewalls",), "id"), (("flows",), "id"),
    (("hypervisors",), "id"), (("systems",), "id"), (("key_stores",), "id"),
    (("sites", "*", "segments"), "name"),
)


def _refuse_duplicate_ids(doc: CommentedMap, path: Path) -> None:
    """Two entries of one list with the same id are one ``InputError`` naming both lines; so are
    two equal entries of ``identity_provider.clients``."""
    for where, key in _UNIQUE:
        for loc, seq in _lists(doc, where, ()):
            seen: dict[str, int] = {}
            for i, item in enumerate(seq):
                value = item.get(key) if isinstance(item, CommentedMap) else None
                if not isinstance(value, str):
                    continue  # the model reports a missing or mistyped id
                if value in seen:
                    _duplicate(doc, path, loc, key, value, seen[value], i)
                seen[value] = i
    for loc, seq in _lists(doc, ("identity_provider", "clients"), ()):
        first: dict[str, int] = {}
        for i, client in enumerate(seq):
            if isinstance(client, str):
                if client in first:
                    _duplicate(doc, path, loc, None, client, first[client], i)
                first[client] = i


def _lists(node: Any, where: tuple[str, ...], loc: tuple[Any, ...]) -> list[tuple[tuple[Any, ...], CommentedSeq]]:
    if not where:
        return [(loc, node)] if isinstance(node, CommentedSeq) else []
    head, rest = where[0], where[1:]
    if head == "*":
        if not isinstance(node, CommentedSeq):
            return []
        return [hit for i, item in enumerate(node) for hit in _lists(item, rest, (*loc, i))]
    if not isinstance(node, CommentedMap) or head not in node:
        return []
    return _lists(node[head], rest, (*loc, head))


def _duplicate(doc: CommentedMap, path: Path, loc: tuple[Any, ...], key: str | None, value: str,
               first: int, second: int) -> None:
    def place(i: int) -> str:
        at = (*loc, i, key) if key else (*loc, i)
        return f"{path}:{_line_of(doc, at) or 1}: {'.'.join(str(p) for p in at)}"

    raise InputError(f"{place(second)}: duplicate {key or 'entry'} {value!r} (first at {place(first)})")


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
