"""LMS exports into the training store, all or nothing.

Two formats:

* CSV with a header row: ``username`` (or ``hsa_id``, or both), ``course``, ``completed_at``;
  other columns (names, scores …) are ignored.
* JSON: a list of completion objects with the same fields, or an object with ``completions``
  and optionally ``courses`` (``code``, ``title``, ``validity_days``) and ``requirements``
  (``role``, ``course``).

``completed_at`` is a date (``2026-03-01``, midnight UTC) or an RFC 3339 time with a zone.
A file larger than ``MAX_IMPORT_BYTES``, JSON nested deeper than Python can read, numbers too long
to convert and text that is not valid Unicode are rejected like any bad row (exit 1, no traceback).
Every row is checked before anything is written; any bad row, duplicate or unknown user rejects
the whole file and each problem is reported with its line and field. Completions already in the
store are left alone, so importing the same file twice changes nothing.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from estate.documents import DocumentError, read_limited

from .training_store import Completion, Course, TrainingStore, User

FORMATS = ("csv", "json")

MAX_IMPORT_BYTES = 64 * 1024 * 1024
"""The largest LMS export read (about 800,000 completions in CSV)."""

MAX_VALIDITY_DAYS = 100 * 366


@dataclass(frozen=True)
class RowError:
    line: int
    field: str | None
    message: str

    def __str__(self) -> str:
        return f"line {self.line}" + (f", {self.field}" if self.field else "") + f": {self.message}"


class ImportRejected(Exception):
    """The file was rejected; nothing was written. ``errors`` lists every problem."""

    def __init__(self, source: str, errors: list[RowError]) -> None:
        self.source, self.errors = source, errors
        super().__init__(f"{source}: rejected, {len(errors)} problem(s); nothing was written")


@dataclass(frozen=True)
class Row:
    line: int
    values: dict[str, Any]


@dataclass
class Parsed:
    courses: list[Row] = field(default_factory=list)
    requirements: list[Row] = field(default_factory=list)
    completions: list[Row] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


@dataclass(frozen=True)
class ImportReport:
    source: str
    rows: int
    inserted: int
    unchanged: int
    courses_changed: int
    requirements_added: int

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "rows": self.rows, "inserted": self.inserted,
                "unchanged": self.unchanged, "courses_changed": self.courses_changed,
                "requirements_added": self.requirements_added}


def guess_format(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    if suffix in FORMATS:
        return suffix
    raise ValueError(f"{path}: cannot tell the format from the name; pass --format csv|json")


# -- parsing -----------------------------------------------------------------------------------

def parse_csv(text: str) -> Parsed:
    out = Parsed()
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        header = reader.fieldnames or []
    except csv.Error as err:
        out.errors.append(RowError(1, None, f"not valid CSV: {err}"))
        return out
    header = [h.strip() for h in header]
    reader.fieldnames = header
    missing = [c for c in ("course", "completed_at") if c not in header]
    if not header:
        out.errors.append(RowError(1, None, "empty file: expected a header row"))
    elif missing or not ({"username", "hsa_id"} & set(header)):
        need = missing + ([] if {"username", "hsa_id"} & set(header) else ["username or hsa_id"])
        out.errors.append(RowError(1, None, f"header lacks column(s): {', '.join(need)}"))
        return out
    line = 1
    try:
        for rec in reader:
            line = reader.line_num
            if None in rec:
                out.errors.append(RowError(line, None, "more fields than the header has"))
                continue
            if all(not (v or "").strip() for v in rec.values()):
                continue  # a blank line
            out.completions.append(Row(line, {k: (v or "").strip() for k, v in rec.items()}))
    except csv.Error as err:
        out.errors.append(RowError(reader.line_num or line, None, f"not valid CSV: {err}"))
    return out


def parse_json(text: str) -> Parsed:
    out = Parsed()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        out.errors.append(RowError(err.lineno, None, f"not valid JSON: {err.msg}"))
        return out
    except (ValueError, RecursionError, MemoryError) as err:
        # a number too long to convert, or nesting deeper than Python's stack
        out.errors.append(RowError(1, None, f"not valid JSON: {type(err).__name__}: {str(err)[:80]}"))
        return out
    lines = _element_lines(text)
    if isinstance(doc, list):
        sections = {"completions": doc}
        lines = {"completions": lines.get("", [])}
    elif isinstance(doc, dict):
        unknown = sorted(set(doc) - {"courses", "requirements", "completions"})
        if unknown:
            shown = json.dumps(unknown[0])[1:-1]  # escaped: a key may hold a lone surrogate
            out.errors.append(RowError(1, shown, "unknown key (expected courses, requirements, completions)"))
        sections = doc
    else:
        out.errors.append(RowError(1, None, "expected a list of completions or an object"))
        return out
    for name in ("courses", "requirements", "completions"):
        items = sections.get(name, [])
        if not isinstance(items, list):
            out.errors.append(RowError(1, name, "must be a list"))
            continue
        where = lines.get(name, [])
        for i, item in enumerate(items):
            line = where[i] if i < len(where) else 1
            if not isinstance(item, dict):
                out.errors.append(RowError(line, None, "each entry must be an object"))
                continue
            getattr(out, name).append(Row(line, item))
    return out


def _element_lines(text: str) -> dict[str, list[int]]:
    """The line where each element of the top-level list (key ``""``) or of each top-level
    key's list begins; the text is valid JSON already."""
    dec = json.JSONDecoder()
    ws = " \t\r\n"

    def skip(i: int) -> int:
        while i < len(text) and text[i] in ws:
            i += 1
        return i

    def line_at(i: int) -> int:
        return text.count("\n", 0, i) + 1

    def walk_list(i: int) -> tuple[list[int], int]:
        starts: list[int] = []
        i = skip(i + 1)
        if text[i] == "]":
            return starts, i + 1
        while True:
            i = skip(i)
            starts.append(line_at(i))
            _, i = dec.raw_decode(text, i)
            i = skip(i)
            if text[i] == ",":
                i += 1
                continue
            return starts, i + 1

    out: dict[str, list[int]] = {}
    i = skip(0)
    if text[i] == "[":
        out[""], _ = walk_list(i)
    elif text[i] == "{":
        i = skip(i + 1)
        while i < len(text) and text[i] != "}":
            key, i = dec.raw_decode(text, i)
            i = skip(skip(i) + 1)  # past ':'
            if text[i] == "[":
                out[str(key)], i = walk_list(i)
            else:
                _, i = dec.raw_decode(text, i)
            i = skip(i)
            if text[i] == ",":
                i = skip(i + 1)
    return out


# -- validation --------------------------------------------------------------------------------

def _text(row: Row, key: str, errors: list[RowError], *, required: bool = True) -> str | None:
    value = row.values.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            errors.append(RowError(row.line, key, "missing"))
        return None
    if not isinstance(value, str):
        errors.append(RowError(row.line, key, f"must be text, got {json.dumps(value)[:80]}"))
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        errors.append(RowError(row.line, key, "not valid Unicode text (a lone surrogate)"))
        return None
    return value.strip()


def parse_completed_at(value: str) -> datetime:
    """A date (midnight UTC) or an RFC 3339 time with a zone; raises ``ValueError``."""
    if len(value) == 10:
        d = date.fromisoformat(value)
        return datetime(d.year, d.month, d.day, tzinfo=UTC)
    t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError("a time needs a zone, e.g. 2026-03-01T09:00:00Z")
    return t.astimezone(UTC)


@dataclass(frozen=True)
class _Completion:
    line: int
    username: str
    course: str
    completed_at: datetime


def validate(parsed: Parsed, store: TrainingStore, at: datetime) -> tuple[list[_Completion], list[RowError]]:
    """Check every row against the store; returns the completions and every problem found."""
    errors = list(parsed.errors)
    with store.session() as s:
        known_courses = {c.code for c in s.scalars(select(Course))}
        by_name = {u.username: u.hsa_id for u in s.scalars(select(User))}
    by_hsa = {h: u for u, h in by_name.items() if h}
    for row in parsed.courses:
        code = _text(row, "code", errors)
        _text(row, "title", errors)
        days = row.values.get("validity_days")
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_VALIDITY_DAYS:
            errors.append(RowError(row.line, "validity_days",
                                   f"must be a whole number of days from 1 to {MAX_VALIDITY_DAYS}"))
        if code:
            known_courses.add(code)
    for row in parsed.requirements:
        _text(row, "role", errors)
        code = _text(row, "course", errors)
        if code and code not in known_courses:
            errors.append(RowError(row.line, "course", f"unknown course {code!r}"))
    good: list[_Completion] = []
    seen: dict[tuple[str, str, datetime], int] = {}
    for row in parsed.completions:
        before = len(errors)
        username = _text(row, "username", errors, required=False)
        hsa_id = _text(row, "hsa_id", errors, required=False)
        course = _text(row, "course", errors)
        raw_when = _text(row, "completed_at", errors)
        when = None
        if raw_when:
            try:
                when = parse_completed_at(raw_when)
            except (ValueError, OverflowError) as err:
                errors.append(RowError(row.line, "completed_at", f"{raw_when!r} is not a date or time: {err}"))
            else:
                if when > at:
                    errors.append(RowError(row.line, "completed_at", f"{raw_when} is in the future"))
        if username is None and hsa_id is None:
            errors.append(RowError(row.line, "username", "missing (give username or hsa_id)"))
        elif username is not None and username not in by_name:
            errors.append(RowError(row.line, "username", f"unknown user {username!r}"))
        elif username is None and hsa_id not in by_hsa:
            errors.append(RowError(row.line, "hsa_id", f"unknown user with HSA-id {hsa_id!r}"))
        elif username is not None and hsa_id is not None and by_name[username] != hsa_id:
            errors.append(RowError(row.line, "hsa_id", f"{hsa_id!r} is not the HSA-id of {username!r}"))
        if course and course not in known_courses:
            errors.append(RowError(row.line, "course", f"unknown course {course!r}"))
        if len(errors) > before or when is None or course is None:
            continue
        user = username if username is not None else by_hsa[hsa_id]  # type: ignore[index]
        key = (user, course, when)
        if key in seen:
            errors.append(RowError(row.line, None, f"duplicate of line {seen[key]} "
                                                   f"({user}, {course}, {raw_when})"))
            continue
        seen[key] = row.line
        good.append(_Completion(row.line, user, course, when))
    errors.sort(key=lambda e: e.line)
    return good, errors


# -- loading -----------------------------------------------------------------------------------

def import_text(store: TrainingStore, text: str, fmt: str, source: str, at: datetime) -> ImportReport:
    """Validate everything, then write it in one transaction; raise ``ImportRejected``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: use csv or json")
    parsed = parse_csv(text) if fmt == "csv" else parse_json(text)
    completions, errors = validate(parsed, store, at)
    if errors:
        raise ImportRejected(source, errors)
    courses_changed = requirements_added = inserted = 0
    with store.transaction() as s:
        for row in parsed.courses:
            v = row.values
            courses_changed += store.define_course(s, v["code"].strip(), v["title"].strip(),
                                                   int(v["validity_days"]))
        for row in parsed.requirements:
            requirements_added += store.require(s, row.values["role"].strip(),
                                                row.values["course"].strip())
        users = {u.username: u for u in s.scalars(select(User))}
        courses = {c.code: c for c in s.scalars(select(Course))}
        existing = {(u, c, t) for u, c, t in s.execute(
            select(User.username, Course.code, Completion.completed_at)
            .join(Completion.user).join(Completion.course))}
        for c in completions:
            if (c.username, c.course, c.completed_at) in existing:
                continue
            s.add(Completion(user=users[c.username], course=courses[c.course],
                             completed_at=c.completed_at, source=source[-255:], recorded_at=at))
            inserted += 1
        report = ImportReport(source, len(completions), inserted, len(completions) - inserted,
                              courses_changed, requirements_added)
        store.record_event(s, "import", at, report.to_dict())
    return report


def import_file(store: TrainingStore, path: Path, fmt: str | None, at: datetime) -> ImportReport:
    fmt = fmt or guess_format(path)
    try:
        text = read_limited(path, MAX_IMPORT_BYTES).decode("utf-8-sig")
    except DocumentError as err:
        raise ImportRejected(str(path), [RowError(1, None, err.problem)]) from err
    except UnicodeDecodeError as err:
        raise ImportRejected(str(path), [RowError(1, None, f"not UTF-8 text: {err.reason}")]) from err
    return import_text(store, text, fmt, str(path), at)


def iter_errors(err: ImportRejected) -> Iterator[str]:
    for e in err.errors:
        yield f"{err.source}: {e}"
