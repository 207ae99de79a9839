"""Read a YAML document from a file the user hands us, treating hostile input as bad input.

Every YAML file Skydd reads (inventories, controls, frameworks, profiles, baselines, fixtures)
goes through ``read_yaml``. Every event the parser hands to the composer is screened, so before
anything is built from the text it refuses what no Skydd file needs and an attacker would use:

* files larger than ``MAX_DOCUMENT_BYTES`` (read no further than the limit);
* text that is not UTF-8, or holds characters YAML forbids (NUL and other controls);
* anchors and aliases (``&x`` / ``*x``, and so ``<<`` merges): an alias bomb cannot expand;
* nesting deeper than ``MAX_DEPTH`` mappings and sequences;
* tags beyond the plain core schema (``!!python/…``, ``!!binary``, ``!custom`` …);
* duplicate mapping keys (ruamel.yaml refuses them itself).

Any failure while building the document (numbers too long to convert, impossible dates, a
``RecursionError`` or ``MemoryError``) is a ``DocumentError`` naming the file and, where the
parser knows it, the line: exit 2 and one line, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, Event, NodeEvent

from .errors import InputError

MAX_DOCUMENT_BYTES = 512 * 1024
"""The largest YAML file read. The shipped files are below 20 KiB (the lab inventory 7 KiB), so
a real estate's inventory fits many times over. Parsing is linear in the size but slow (pure
Python, about 25 s for the worst 512 KiB on a loaded 2-core machine): the limit is the bound."""

MAX_DEPTH = 64
"""The deepest nesting of mappings and sequences accepted (the shipped files reach 14)."""

_CORE_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map"))


class DocumentError(InputError):
    """A file could not be read as a document: ``source``, ``line`` (1-based, when known) and
    ``problem`` say where and why (exit 2)."""

    def __init__(self, source: str, line: int | None, problem: str) -> None:
        self.source, self.line, self.problem = source, line, problem
        super().__init__(f"{source}:{line}: {problem}" if line else f"{source}: {problem}")


def read_limited(path: Path, limit: int = MAX_DOCUMENT_BYTES, *, what: str = "") -> bytes:
    """The bytes of ``path``, refusing a file larger than ``limit`` without reading it all;
    ``what`` names the file's role in the error (``cannot read inventory: …``)."""
    try:
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except OSError as err:
        name = f" {what}" if what else ""
        raise DocumentError(str(path), None, f"cannot read{name}: {err.strerror or err}") from err
    if len(data) > limit:
        raise DocumentError(str(path), None, f"larger than the limit of {limit} bytes")
    return data


def decode_utf8(data: bytes, source: str) -> str:
    """Strict UTF-8 (a leading byte order mark is kept for the parser to drop)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DocumentError(source, line, f"not UTF-8 text (byte 0x{data[err.start]:02x} at offset "
                                          f"{err.start})") from err


def read_yaml(path: Path, *, round_trip: bool = False, limit: int = MAX_DOCUMENT_BYTES,
              what: str = "") -> Any:
    """Read and parse one YAML file; ``round_trip`` keeps line numbers (``CommentedMap``)."""
    data = read_limited(path, limit, what=what)
    return parse_yaml(decode_utf8(data, str(path)), str(path), round_trip=round_trip)


def parse_yaml(text: str, source: str, *, round_trip: bool = False) -> Any:
    """Parse one YAML document from ``text``, refusing aliases, deep nesting and odd tags as the
    parser meets them, before anything is built."""
    yaml = YAML(typ="rt") if round_trip else YAML(typ="safe", pure=True)
    yaml.Parser = _screened(yaml.Parser, source)
    try:
        return yaml.load(text)
    except DocumentError:
        raise
    except YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        position = getattr(err, "position", None)  # a ReaderError: a forbidden character
        line = (mark.line + 1 if mark is not None
                else text.count("\n", 0, position) + 1 if isinstance(position, int) else None)
        problem = getattr(err, "problem", None) or getattr(err, "reason", None) or str(err).splitlines()[0]
        raise DocumentError(source, line, f"not valid YAML: {problem}") from err
    except (RecursionError, MemoryError) as err:
        raise DocumentError(source, None, f"not valid YAML: too large or too deeply nested "
                                          f"({type(err).__name__})") from err
    except (ValueError, KeyError, TypeError, OverflowError) as err:
        # ruamel.yaml builds values with int(), float(), datetime() …: a value they refuse
        # (a 5,000-digit number, month 13, ``!!bool x``) surfaces here.
        raise DocumentError(source, None, f"not valid YAML: a value cannot be read ({err})") from err


def _screened(base: type, source: str) -> type:
    """``base`` (a ruamel.yaml parser class) checking every event the composer takes from it."""

    class Screened(base):  # type: ignore[misc]
        _depth = 0

        def get_event(self) -> Any:
            ev = super().get_event()
            _check_event(ev, source)
            if isinstance(ev, CollectionStartEvent):
                self._depth += 1
                if self._depth > MAX_DEPTH:
                    raise DocumentError(source, _line(ev), f"nested deeper than {MAX_DEPTH} levels")
            elif isinstance(ev, CollectionEndEvent):
                self._depth -= 1
            return ev

    return Screened


def _check_event(ev: Event, source: str) -> None:
    if isinstance(ev, AliasEvent):
        raise DocumentError(source, _line(ev), f"YAML aliases are not allowed (*{ev.anchor}); "
                                               "write the value out")
    if isinstance(ev, NodeEvent) and ev.anchor:
        raise DocumentError(source, _line(ev), f"YAML anchors are not allowed (&{ev.anchor}); "
                                               "write the value out")
    tag = getattr(ev, "tag", None)
    if tag is not None and str(tag) not in _CORE_TAGS:
        raise DocumentError(source, _line(ev), f"YAML tag {str(tag)!r} is not allowed")


def _line(ev: Event) -> int | None:
    mark = getattr(ev, "start_mark", None)
    return mark.line + 1 if mark is not None else None
