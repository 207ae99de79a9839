"""Declarative check operators over evidence paths, and the registry of named Python checks.

A check is built once from its YAML form (``parse_check``) and evaluated many times against
evidence data (``Check.evaluate``). Evaluation is pure: time arrives as ``at``. A path that is
absent raises ``EvidenceMissing`` so the engine reports ``error``, never ``pass``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from .errors import CatalogError, EvidenceMissing


@dataclass(frozen=True)
class Outcome:
    """What one check concluded, with the observed values that decided it."""

    ok: bool
    detail: str
    observed: Mapping[str, Any]


# -- paths -------------------------------------------------------------------------------------

_SEGMENT = re.compile(r'\["((?:[^"\\]|\\.)*)"\]|\[(\d+)\]|([^.\[\]]+)')


@lru_cache(maxsize=4096)
def parse_path(path: str) -> tuple[str | int, ...]:
    """``a.b[0]["x.y"]`` → ``("a", "b", 0, "x.y")``; raises ``ValueError`` on junk."""
    segments: list[str | int] = []
    pos = 0
    while pos < len(path):
        if path[pos] == "." and segments:
            pos += 1
        m = _SEGMENT.match(path, pos)
        if not m:
            raise ValueError(f"bad evidence path {path!r} at character {pos}")
        quoted, index, plain = m.groups()
        segments.append(int(index) if index is not None else (quoted if quoted is not None else plain))
        pos = m.end()
    if not segments:
        raise ValueError("empty evidence path")
    return tuple(segments)


def resolve(data: Any, path: tuple[str | int, ...], text: str) -> Any:
    node = data
    for seg in path:
        if isinstance(seg, int) and isinstance(node, list) and -len(node) <= seg < len(node):
            node = node[seg]
            continue
        if isinstance(seg, str) and isinstance(node, (dict, AbcMapping)) and seg in node:
            node = node[seg]
            continue
        raise EvidenceMissing(f"evidence has no {text!r}")
    return node


# -- durations and times -----------------------------------------------------------------------

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: Any) -> timedelta:
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"bad duration {text!r}: use a number and s, m, h or d (e.g. 7d)")
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


def parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        t = value
    elif isinstance(value, str):
        try:
            t = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as err:
            raise EvidenceMissing(f"not a timestamp: {value!r}") from err
    else:
        raise EvidenceMissing(f"not a timestamp: {value!r}")
    if t.tzinfo is None:
        raise EvidenceMissing(f"timestamp without timezone: {value!r}")
    return t.astimezone(UTC)


# -- checks ------------------------------------------------------------------------------------

class Check:
    manual = False

    def evaluate(self, data: Any, at: datetime) -> Outcome:  # pragma: no cover - abstract
        raise NotImplementedError


def _num(value: Any, text: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EvidenceMissing(f"{text!r} is not a number: {value!r}")
    return float(value)


_PATH_OPS: dict[str, Callable[[Any, Any, datetime, str], tuple[bool, str]]] = {
    "equals": lambda v, want, at, p: (v == want, f"{p} = {v!r}, expected {want!r}"),
    "one_of": lambda v, want, at, p: (v in want, f"{p} = {v!r}, expected one of {list(want)!r}"),
    "at_least": lambda v, want, at, p: (_num(v, p) >= want, f"{p} = {v!r}, expected ≥ {want}"),
    "at_most": lambda v, want, at, p: (_num(v, p) <= want, f"{p} = {v!r}, expected ≤ {want}"),
    "matches": lambda v, want, at, p: (isinstance(v, str) and re.fullmatch(want, v) is not None,
                                       f"{p} = {v!r}, expected to match /{want}/"),
    "contains": lambda v, want, at, p: (isinstance(v, list) and want in v,
                                        f"{p} = {v!r}, expected to contain {want!r}"),
    "count_at_least": lambda v, want, at, p: (isinstance(v, list) and len(v) >= want,
                                              f"{p} has {len(v) if isinstance(v, list) else 'no'}"
                                              f" items, expected ≥ {want}"),
    "age_within": lambda v, want, at, p: (at - parse_time(v) <= parse_duration(want),
                                          f"{p} = {v!r}, expected within {want} of {at:%Y-%m-%d %H:%M}Z"),
}


@dataclass(frozen=True)
class PathCheck(Check):
    path: str
    op: str
    want: Any

    def evaluate(self, data: Any, at: datetime) -> Outcome:
        value = resolve(data, parse_path(self.path), self.path)
        ok, detail = _PATH_OPS[self.op](value, self.want, at, self.path)
        return Outcome(ok, detail, {self.path: value})


@dataclass(frozen=True)
class Quantifier(Check):
    """``every`` / ``any`` element of a list satisfies an inner check (paths relative)."""

    path: str
    every: bool
    inner: Check

    def evaluate(self, data: Any, at: datetime) -> Outcome:
        items = resolve(data, parse_path(self.path), self.path)
        if not isinstance(items, list):
            raise EvidenceMissing(f"{self.path!r} is not a list")
        if not items:
            # An empty list proves nothing either way: fail closed.
            raise EvidenceMissing(f"{self.path!r} is empty")
        outcomes = [(i, self.inner.evaluate(item, at)) for i, item in enumerate(items)]
        bad = [(i, o) for i, o in outcomes if not o.ok]
        good = [(i, o) for i, o in outcomes if o.ok]
        if self.every:
            ok = not bad
            shown = bad if bad else outcomes
        else:
            ok = bool(good)
            shown = good[:1] if good else outcomes
        label = _label(items)
        detail = "; ".join(f"{self.path}[{label(i)}]: {o.detail}" for i, o in shown[:5])
        if len(shown) > 5:
            detail += f"; … {len(shown) - 5} more"
        observed = {f"{self.path}[{label(i)}]": dict(o.observed) for i, o in shown[:20]}
        return Outcome(ok, detail, observed)


def _label(items: list[Any]) -> Callable[[int], str]:
    def label(i: int) -> str:
        item = items[i]
        if isinstance(item, Mapping):
            for key in ("id", "name", "key"):
                if isinstance(item.get(key), (str, int)):
                    return str(item[key])
        return str(i)
    return label


@dataclass(frozen=True)
class AllOf(Check):
    checks: tuple[Check, ...]

    def evaluate(self, data: Any, at: datetime) -> Outcome:
        outcomes = [c.evaluate(data, at) for c in self.checks]
        failed = [o for o in outcomes if not o.ok]
        observed: dict[str, Any] = {}
        for o in outcomes:
            observed.update(o.observed)
        detail = "; ".join(o.detail for o in (failed or outcomes))
        return Outcome(not failed, detail, observed)


@dataclass(frozen=True)
class AnyOf(Check):
    checks: tuple[Check, ...]

    def evaluate(self, data: Any, at: datetime) -> Outcome:
        missing: EvidenceMissing | None = None
        outcomes: list[Outcome] = []
        for c in self.checks:
            try:
                o = c.evaluate(data, at)
            except EvidenceMissing as err:
                missing = err
                continue
            if o.ok:
                return o
            outcomes.append(o)
        if missing is not None:
            raise missing
        observed: dict[str, Any] = {}
        for o in outcomes:
            observed.update(o.observed)
        return Outcome(False, " or ".join(o.detail for o in outcomes), observed)


@dataclass(frozen=True)
class Not(Check):
    inner: Check

    def evaluate(self, data: Any, at: datetime) -> Outcome:
        o = self.inner.evaluate(data, at)
        return Outcome(not o.ok, f"not ({o.detail})", o.observed)


@dataclass(frozen=True)
class Attested(Check):
    """A manual control: an officer's attestation exists and is neither expired nor too old."""

    max_age: str
    manual = True

    def evaluate(self, data: Any, at: datetime) -> Outcome:
        attested_at = parse_time(resolve(data, ("attested_at",), "attested_at"))
        expires_at = parse_time(resolve(data, ("expires_at",), "expires_at"))
        by = data.get("officer", "?") if isinstance(data, Mapping) else "?"
        fresh = at - attested_at <= parse_duration(self.max_age) and at < expires_at
        detail = (f"attested by {by} at {attested_at:%Y-%m-%d}, expires {expires_at:%Y-%m-%d}"
                  + ("" if fresh else " (expired or older than " + self.max_age + ")"))
        return Outcome(fresh, detail, {"attested_at": str(attested_at), "expires_at": str(expires_at)})


NamedCheckFn = Callable[[Any, Mapping[str, Any], datetime], Outcome]
NAMED_CHECKS: dict[str, NamedCheckFn] = {}


def named_check(name: str) -> Callable[[NamedCheckFn], NamedCheckFn]:
    """Register a Python check for what operators cannot say. Raise ``EvidenceMissing`` when
    the evidence does not let it decide."""

    def register(fn: NamedCheckFn) -> NamedCheckFn:
        if name in NAMED_CHECKS:
            raise ValueError(f"named check {name!r} registered twice")
        NAMED_CHECKS[name] = fn
        return fn

    return register


@dataclass(frozen=True)
class Named(Check):
    name: str
    params: Mapping[str, Any]

    def evaluate(self, data: Any, at: datetime) -> Outcome:
        return NAMED_CHECKS[self.name](data, self.params, at)


# -- parsing -----------------------------------------------------------------------------------

def parse_check(spec: Any, where: str, key: str = "check") -> Check:
    """Build a check from its YAML form; unknown operators are a ``CatalogError``."""
    from . import named  # noqa: F401  (registers the named checks)

    if not isinstance(spec, Mapping) or not spec:
        raise CatalogError(where, key, "a check must be a non-empty mapping")
    keys = set(spec)
    if keys == {"all_of"} or keys == {"any_of"}:
        op = next(iter(keys))
        items = spec[op]
        if not isinstance(items, list) or not items:
            raise CatalogError(where, f"{key}.{op}", "needs a non-empty list of checks")
        parsed = tuple(parse_check(s, where, f"{key}.{op}[{i}]") for i, s in enumerate(items))
        return AllOf(parsed) if op == "all_of" else AnyOf(parsed)
    if keys == {"not"}:
        return Not(parse_check(spec["not"], where, f"{key}.not"))
    if "python" in keys:
        extra = keys - {"python", "params"}
        if extra:
            raise CatalogError(where, f"{key}.{sorted(extra)[0]}", "unknown key beside 'python'")
        name = spec["python"]
        if name not in NAMED_CHECKS:
            raise CatalogError(where, f"{key}.python", f"unknown check {name!r}")
        params = spec.get("params", {})
        if not isinstance(params, Mapping):
            raise CatalogError(where, f"{key}.params", "must be a mapping")
        return Named(name, dict(params))
    if keys == {"attested"}:
        body = spec["attested"]
        if not isinstance(body, Mapping) or set(body) != {"max_age"}:
            raise CatalogError(where, f"{key}.attested", "needs exactly 'max_age'")
        _duration(body["max_age"], where, f"{key}.attested.max_age")
        return Attested(str(body["max_age"]))
    if "path" not in keys:
        raise CatalogError(where, f"{key}.{sorted(keys)[0]}", "unknown check")
    path = spec["path"]
    try:
        parse_path(str(path))
    except ValueError as err:
        raise CatalogError(where, f"{key}.path", str(err)) from err
    ops = keys - {"path"}
    if len(ops) != 1:
        raise CatalogError(where, key, f"needs exactly one operator beside 'path', got {sorted(ops)}")
    op = ops.pop()
    want = spec[op]
    if op in ("every", "any"):
        return Quantifier(str(path), op == "every", parse_check(want, where, f"{key}.{op}"))
    if op not in _PATH_OPS:
        raise CatalogError(where, f"{key}.{op}", "unknown check operator")
    if op == "one_of" and not isinstance(want, list):
        raise CatalogError(where, f"{key}.one_of", "must be a list")
    if op in ("at_least", "at_most", "count_at_least") and (
            isinstance(want, bool) or not isinstance(want, (int, float))):
        raise CatalogError(where, f"{key}.{op}", "must be a number")
    if op == "matches":
        try:
            re.compile(want)
        except (re.error, TypeError) as err:
            raise CatalogError(where, f"{key}.matches", f"bad regular expression: {err}") from err
    if op == "age_within":
        _duration(want, where, f"{key}.age_within")
    return PathCheck(str(path), op, want)


def _duration(text: Any, where: str, key: str) -> None:
    try:
        parse_duration(text)
    except ValueError as err:
        raise CatalogError(where, key, str(err)) from err
